//! Logs and metrics on one machine, printed rather than asserted:
//! - ingest per signal: records/s from OTLP/gRPC export to acknowledgement (durable in the
//!   WAL), four concurrent clients, the flusher cutting blocks meanwhile;
//! - storage per signal: bytes on disk per span, log record and metric point once flushed;
//! - correlation: `spans ⋈ logs` for one trace (p50 / p95 over many traces), the same through
//!   `GET /api/v1/traces/{id}/correlated`, and a join over everything (error logs per route).
//!
//! `cargo bench --bench logs_metrics`; `SPANLAKE_BENCH_SPANS` sets the number of spans and of
//! log records (default 1,000,000 each; the generator's logs are drawn again per trace until
//! there are as many records as spans).

mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::config::Config;
use spanlake::generator::{Generator, MetricsAggregator};
use spanlake::schema::otlp::{log_count, point_count, span_count};
use spanlake::server::Server;
use support::{dir_bytes, percentile};
use tonic::transport::Channel;

const CLIENTS: usize = 4;
const TRACES_PER_EXPORT: usize = 50;
/// Metrics exports folded into one request.
const METRIC_EXPORTS_PER_REQUEST: usize = 50;
const T0: i64 = 1_700_000_000_000_000_000;

/// The requests of one signal, split over the clients.
struct Workload<R> {
    per_client: Vec<Vec<R>>,
    records: usize,
}

impl<R> Workload<R> {
    fn new() -> Self {
        Self {
            per_client: (0..CLIENTS).map(|_| Vec::new()).collect(),
            records: 0,
        }
    }

    fn push(&mut self, request: R, records: usize) {
        let client = self.per_client.iter().map(Vec::len).sum::<usize>() % CLIENTS;
        self.per_client[client].push(request);
        self.records += records;
    }
}

/// Sends every request of `workload` over `CLIENTS` concurrent clients made by `client`;
/// prints records/s.
async fn ingest<R, C, F>(signal: &str, workload: Workload<R>, channel: Channel, export: F)
where
    R: Send + 'static,
    C: Send + 'static,
    F: Fn(Channel) -> C + Copy + Send + 'static,
    C: ExportClient<R>,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for requests in workload.per_client {
        let mut client = export(channel.clone());
        tasks.push(tokio::spawn(async move {
            for request in requests {
                client.send(request).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ingest {signal}: {} records in {elapsed:.2}s = {:.0} records/s ({CLIENTS} gRPC clients)",
        workload.records,
        workload.records as f64 / elapsed
    );
}

/// One OTLP client of one signal.
trait ExportClient<R> {
    fn send(&mut self, request: R) -> impl std::future::Future<Output = ()> + Send;
}

impl ExportClient<ExportTraceServiceRequest> for TraceServiceClient<Channel> {
    async fn send(&mut self, request: ExportTraceServiceRequest) {
        self.export(request).await.unwrap();
    }
}

impl ExportClient<ExportLogsServiceRequest> for LogsServiceClient<Channel> {
    async fn send(&mut self, request: ExportLogsServiceRequest) {
        self.export(request).await.unwrap();
    }
}

impl ExportClient<ExportMetricsServiceRequest> for MetricsServiceClient<Channel> {
    async fn send(&mut self, request: ExportMetricsServiceRequest) {
        self.export(request).await.unwrap();
    }
}

#[tokio::main]
async fn main() {
    let target: usize = std::env::var("SPANLAKE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::loopback(dir.path());
    config.ingester.trace_idle = Duration::from_millis(500);
    config.ingester.max_block_age = Duration::from_secs(2);
    config.ingester.flush_check = Duration::from_millis(200);
    let server = Server::start(config, false).await.unwrap();

    // Requests are generated before the clock starts: the bench measures spanlake.
    let mut generator = Generator::new(7);
    let mut aggregator = MetricsAggregator::default();
    let (mut traces, mut logs, mut metrics) = (Workload::new(), Workload::new(), Workload::new());
    let mut trace_ids = Vec::new();
    let mut n = 0i64;
    let mut pending_metrics = ExportMetricsServiceRequest::default();
    while traces.records < target {
        let mut spans_request = ExportTraceServiceRequest::default();
        let mut logs_request = ExportLogsServiceRequest::default();
        for _ in 0..TRACES_PER_EXPORT {
            let trace = generator.trace_at(T0 + n * 1_000_000);
            n += 1;
            let spans_so_far = traces.records + span_count(&spans_request) + span_count(&trace);
            let mut first_logs = true;
            while first_logs || logs.records + log_count(&logs_request) < spans_so_far {
                let trace_logs = generator.logs_for(&trace);
                // Sampled among traces with logs: the join below must find rows.
                if first_logs && n % 997 == 0 && log_count(&trace_logs) > 0 {
                    trace_ids.push(hex::encode(
                        &trace.resource_spans[0].scope_spans[0].spans[0].trace_id,
                    ));
                }
                first_logs = false;
                logs_request.resource_logs.extend(trace_logs.resource_logs);
            }
            aggregator.observe(&trace);
            if n % 100 == 0 {
                pending_metrics
                    .resource_metrics
                    .extend(aggregator.export_at(T0 + n * 1_000_000).resource_metrics);
                if ((n / 100) as usize).is_multiple_of(METRIC_EXPORTS_PER_REQUEST) {
                    let request = std::mem::take(&mut pending_metrics);
                    let points = point_count(&request);
                    metrics.push(request, points);
                }
            }
            spans_request.resource_spans.extend(trace.resource_spans);
        }
        let (spans, records) = (span_count(&spans_request), log_count(&logs_request));
        traces.push(spans_request, spans);
        logs.push(logs_request, records);
    }
    let points = point_count(&pending_metrics);
    if points > 0 {
        metrics.push(pending_metrics, points);
    }

    let channel = Channel::from_shared(format!("http://{}", server.otlp_grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (spans_total, logs_total, points_total) = (traces.records, logs.records, metrics.records);
    ingest("spans", traces, channel.clone(), TraceServiceClient::new).await;
    ingest("logs", logs, channel.clone(), LogsServiceClient::new).await;
    ingest("metrics", metrics, channel, MetricsServiceClient::new).await;

    let flush_started = Instant::now();
    let report = server.ingester.flush(true).await.unwrap();
    println!(
        "final flush: {} blocks, {} rows in {:.2}s",
        report.blocks,
        report.rows,
        flush_started.elapsed().as_secs_f64()
    );
    let blocks = dir.path().join("blocks/single-tenant");
    for (signal, records, unit) in [
        ("traces", spans_total, "span"),
        ("logs", logs_total, "log record"),
        ("metrics", points_total, "point"),
    ] {
        let bytes = dir_bytes(&blocks.join(signal), ".parquet");
        println!(
            "storage {signal}: {:.1} bytes per {unit} ({:.1} MiB for {records})",
            bytes as f64 / records.max(1) as f64,
            bytes as f64 / (1 << 20) as f64
        );
    }

    let engine = server.engine.clone();
    let tenant = spanlake::tenant::SINGLE_TENANT;
    let mut latencies = Vec::new();
    for id in &trace_ids {
        let query = format!(
            "SELECT s.name, l.time, l.severity_text, l.body FROM spans s JOIN logs l \
             ON l.trace_id = s.trace_id AND l.span_id = s.span_id \
             WHERE s.trace_id = to_trace_id('{id}') ORDER BY l.time"
        );
        let started = Instant::now();
        let (_, batches) = engine.sql(tenant, &query).await.unwrap();
        latencies.push(started.elapsed());
        assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    }
    latencies.sort();
    println!(
        "spans ⋈ logs, one trace ({} traces): p50 {:.1} ms, p95 {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3
    );

    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    for id in &trace_ids {
        let started = Instant::now();
        let response = http
            .get(format!(
                "http://{}/api/v1/traces/{id}/correlated",
                server.http_addr
            ))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "GET /api/v1/traces/{{id}}/correlated (spans, logs, exemplars): p50 {:.1} ms, p95 {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3
    );

    let started = Instant::now();
    let (_, batches) = engine
        .sql(
            tenant,
            "SELECT s.http_route, count(*) FROM logs l JOIN spans s \
             ON s.trace_id = l.trace_id AND s.span_id = l.span_id \
             WHERE l.severity_number >= 17 GROUP BY 1",
        )
        .await
        .unwrap();
    println!(
        "spans ⋈ logs, all error logs by route ({} groups): {:.0} ms",
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        started.elapsed().as_secs_f64() * 1e3
    );
    server.shutdown().await;
}
