"""Exports logs and metrics to spanlake with the OpenTelemetry Python SDK's OTLP exporters.

Usage: export_logs_metrics.py grpc|http ENDPOINT

Both signals carry the resource service.name = py-logs-{protocol}; instrumentation scope
"spanlake-e2e" 1.0.

Logs (SimpleLogRecordProcessor: one synchronous export per record):
  - INFO  (9),  body "order 42 placed", attributes order.id=42 (int), ratio=0.5 (double),
    cached=True (bool), user="ada" (string); inside the span printed below.
  - ERROR (17), structured body {"error": "timeout", "retries": 3}; inside that span.
  - WARN  (13), body "disk almost full"; outside any span (no trace context).

Metrics (one cumulative export, by force_flush; the reader never exports on its own):
  - py.requests   Counter, ints 3 + 4 = 7, attribute route="/a"      -> monotonic Sum, as_int 7
  - py.temperature Gauge, 21.5                                       -> Gauge, as_double 21.5
  - py.latency    Histogram, bounds [1, 5, 10], values 0.5 3 3 7 20  -> bucket_counts [1, 2, 1, 1],
                  count 5, sum 33.5, min 0.5, max 20; recorded inside the span, so its exemplars
                  (the last value per bucket: 0.5, 3, 7, 20) carry the span's ids
  - py.big        Gauge, int 2**53 + 1 = 9007199254740993             -> Gauge, as_int, exact

Prints one JSON object once everything is exported:
  {"trace_id": hex, "span_id": hex, "logs": 3, "service": "py-logs-{protocol}"}
Exits non-zero when an export failed: the SDK swallows exporter failures (it logs them), so
the exporters here record each export's result and the SDK's error logs are counted too.
"""

import json
import logging
import math
import sys
import time

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

LATENCY_BOUNDS = (1.0, 5.0, 10.0)
LATENCY_VALUES = (0.5, 3, 3, 7, 20)
BIG = 2**53 + 1

# (signal, succeeded) for every export call the exporters made.
EXPORTS = []


class ErrorCounter(logging.Handler):
    """Counts the errors the SDK logs instead of raising (failed exports, encoding errors)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.errors = 0

    def emit(self, record):
        self.errors += 1


def recording(signal, exporter_class):
    """A subclass of `exporter_class` that records the result of every export."""

    class Recording(exporter_class):
        def export(self, *args, **kwargs):
            try:
                result = super().export(*args, **kwargs)
            except Exception:
                EXPORTS.append((signal, False))
                raise
            EXPORTS.append((signal, result.name == "SUCCESS"))
            return result

    return Recording


def log_exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return recording("logs", OTLPLogExporter)(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return recording("logs", OTLPLogExporter)(endpoint=endpoint + "/v1/logs")


def metric_exporter(protocol, endpoint):
    temporality = {
        Counter: AggregationTemporality.CUMULATIVE,
        Histogram: AggregationTemporality.CUMULATIVE,
    }
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return recording("metrics", OTLPMetricExporter)(
            endpoint=endpoint, insecure=True, preferred_temporality=temporality
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return recording("metrics", OTLPMetricExporter)(
        endpoint=endpoint + "/v1/metrics", preferred_temporality=temporality
    )


def parse_args(argv):
    if len(argv) != 3 or argv[1] not in ("grpc", "http"):
        sys.exit(f"usage: {argv[0]} grpc|http ENDPOINT")
    return argv[1], argv[2].rstrip("/")


def main():
    protocol, endpoint = parse_args(sys.argv)
    # The SDK's own warnings and errors go to stderr; errors are counted as well.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    errors = ErrorCounter()
    logging.getLogger("opentelemetry").addHandler(errors)

    service = f"py-logs-{protocol}"
    resource = Resource.create({"service.name": service, "deployment.environment.name": "test"})
    # No span processor: the spans exist only to give the records and exemplars their ids.
    tracer = TracerProvider(resource=resource).get_tracer("spanlake-e2e", "1.0")

    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter(protocol, endpoint)))
    logger = log_provider.get_logger("spanlake-e2e", "1.0")

    # math.inf: no background thread; the only export is the force_flush below.
    reader = PeriodicExportingMetricReader(metric_exporter(protocol, endpoint), export_interval_millis=math.inf)
    meter_provider = MeterProvider(
        metric_readers=[reader],
        resource=resource,
        views=[View(instrument_name="py.latency", aggregation=ExplicitBucketHistogramAggregation(LATENCY_BOUNDS))],
    )
    meter = meter_provider.get_meter("spanlake-e2e", "1.0")
    latency = meter.create_histogram("py.latency", unit="ms", description="Request latency")

    with tracer.start_as_current_span("GET /orders", kind=trace.SpanKind.SERVER) as span:
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body="order 42 placed",
            attributes={"order.id": 42, "ratio": 0.5, "cached": True, "user": "ada"},
        )
        logger.emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body={"error": "timeout", "retries": 3},
        )
        for value in LATENCY_VALUES:
            latency.record(value)
    # Outside the span, so the record has no trace context.
    logger.emit(
        timestamp=time.time_ns(),
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        body="disk almost full",
    )

    requests = meter.create_counter("py.requests", unit="{request}", description="Requests handled")
    requests.add(3, {"route": "/a"})
    requests.add(4, {"route": "/a"})
    meter.create_gauge("py.temperature", unit="Cel").set(21.5)
    meter.create_gauge("py.big").set(BIG)

    log_provider.force_flush()
    log_provider.shutdown()
    meter_provider.force_flush()
    meter_provider.shutdown()

    exported = {signal: sum(1 for s, ok in EXPORTS if s == signal and ok) for signal in ("logs", "metrics")}
    failed = [signal for signal, ok in EXPORTS if not ok]
    if failed or errors.errors or exported["logs"] != 3 or exported["metrics"] != 1:
        sys.exit(
            f"export failed: successful exports {exported} (want logs 3, metrics 1), "
            f"failed exports {failed}, SDK errors logged {errors.errors}"
        )

    context = span.get_span_context()
    print(json.dumps({
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "logs": 3,
        "service": service,
    }))


if __name__ == "__main__":
    main()
