"""Exports a small trace to spanlake with the OpenTelemetry Python SDK's OTLP exporter.

Usage: export_spans.py grpc|http ENDPOINT
Prints the trace id and span ids it exported, as JSON, once the exporter has flushed.
"""

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode


def exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint + "/v1/traces")


def main():
    protocol, endpoint = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": f"py-{protocol}", "deployment.environment.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter(protocol, endpoint)))
    tracer = provider.get_tracer("spanlake-e2e", "1.0")

    with tracer.start_as_current_span("GET /orders", kind=trace.SpanKind.SERVER) as parent:
        parent.set_attribute("http.request.method", "GET")
        parent.set_attribute("http.response.status_code", 500)
        parent.set_attribute("code.as_string", "500")
        parent.set_attribute("ratio", 0.25)
        parent.set_attribute("cached", True)
        parent.set_attribute("tags", ["a", "b"])
        with tracer.start_as_current_span("SELECT orders", kind=trace.SpanKind.CLIENT) as child:
            child.set_attribute("db.system", "postgresql")
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "timeout"))

    provider.force_flush()
    provider.shutdown()
    ctx_parent = parent.get_span_context()
    ctx_child = child.get_span_context()
    print(json.dumps({
        "trace_id": format(ctx_parent.trace_id, "032x"),
        "parent": format(ctx_parent.span_id, "016x"),
        "child": format(ctx_child.span_id, "016x"),
    }))


if __name__ == "__main__":
    main()
