//! OTLP/gRPC ingest with 1, 4 and 16 concurrent clients, each sending its requests one after
//! the other (50 generated traces of the wide shape, about 700 spans, per request, as a
//! batching SDK exporter does): spans/s from first request to last acknowledgement (each acknowledged after the WAL
//! fsync), p50 / p99 acknowledgement latency, and bytes per span on disk once flushed.
//!
//! `cargo bench --bench ingest`; `SPANLAKE_BENCH_SPANS` sets the spans sent per run (default
//! 300,000), `SPANLAKE_BENCH_CLIENTS` the client counts (default `1,4,16`).

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::config::Config;
use spanlake::generator::{Generator, TraceShape};
use spanlake::schema::otlp::span_count;
use spanlake::server::Server;

mod support;

use support::{dir_bytes, percentile};

const TRACES_PER_REQUEST: usize = 50;

/// Requests of about `spans` spans in all, split over `clients`, generated before the clock
/// starts.
fn workloads(spans: usize, clients: usize) -> Vec<Vec<ExportTraceServiceRequest>> {
    let mut generator = Generator::new(1).with_shape(TraceShape::Wide);
    let mut all = Vec::new();
    let (mut made, mut n) = (0, 0i64);
    while made < spans {
        let mut request = ExportTraceServiceRequest::default();
        for _ in 0..TRACES_PER_REQUEST {
            let trace = generator.trace_at(1_700_000_000_000_000_000 + n * 10_000_000);
            n += 1;
            request.resource_spans.extend(trace.resource_spans);
        }
        made += span_count(&request);
        all.push(request);
    }
    let mut per_client = vec![Vec::new(); clients];
    for (i, request) in all.into_iter().enumerate() {
        per_client[i % clients].push(request);
    }
    per_client
}

#[tokio::main]
async fn main() {
    let spans: usize = std::env::var("SPANLAKE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let client_counts: Vec<usize> = std::env::var("SPANLAKE_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    println!("| clients | spans/s | ack p50 ms | ack p99 ms | B/span on disk |");
    println!("|---|---|---|---|---|");
    for clients in client_counts {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::loopback(dir.path());
        config.retention.traces = Duration::ZERO;
        let server = Server::start(config, false)
            .await
            .expect("the server starts");
        let endpoint = format!("http://{}", server.otlp_grpc_addr);
        let workloads = workloads(spans, clients);
        let sent: usize = workloads.iter().flatten().map(span_count).sum();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for requests in workloads {
            let endpoint = endpoint.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = TraceServiceClient::connect(endpoint)
                    .await
                    .expect("the client connects");
                let mut acks = Vec::with_capacity(requests.len());
                for request in requests {
                    let sent = Instant::now();
                    client.export(request).await.expect("the export is taken");
                    acks.push(sent.elapsed());
                }
                acks
            }));
        }
        let mut acks = Vec::new();
        for task in tasks {
            acks.extend(task.await.expect("the client finishes"));
        }
        let elapsed = started.elapsed();
        acks.sort();
        server
            .ingester
            .flush(true)
            .await
            .expect("the flush succeeds");
        let bytes = dir_bytes(&dir.path().join("blocks"), ".parquet");
        println!(
            "| {clients} | {:.0} | {:.1} | {:.1} | {:.1} |",
            sent as f64 / elapsed.as_secs_f64(),
            percentile(&acks, 0.5).as_secs_f64() * 1e3,
            percentile(&acks, 0.99).as_secs_f64() * 1e3,
            bytes as f64 / sent as f64
        );
        server.shutdown().await;
    }
}
