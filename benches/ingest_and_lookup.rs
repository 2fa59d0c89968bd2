//! End-to-end numbers on one machine, printed rather than asserted:
//! - ingest: spans/s from OTLP/gRPC export to acknowledgement (durable in the WAL), with
//!   concurrent clients and the flusher cutting blocks meanwhile;
//! - storage: bytes on disk per span once everything is flushed;
//! - trace by id: latency of `WHERE trace_id = …` over the flushed dataset, p50 / p95 / max;
//! - TraceQL search: a handful of typical queries over the same data, time per query and
//!   spans searched per second;
//! - the same through Tempo's HTTP API, as Grafana calls it: `/api/v2/traces/{id}` (protobuf)
//!   and `/api/traces/{id}` (JSON), and `/api/search`, p50 / p95 over repeated requests.
//!
//! `cargo bench --bench ingest_and_lookup`; `SPANLAKE_BENCH_SPANS` sets the dataset size
//! (default 1,000,000 spans).

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::config::Config;
use spanlake::generator::Generator;
use spanlake::schema::otlp::span_count;
use spanlake::server::Server;

mod support;

use support::{dir_bytes, percentile};

const CLIENTS: u64 = 4;
const TRACES_PER_EXPORT: usize = 50;

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
    let endpoint = format!("http://{}", server.otlp_grpc_addr);

    // Requests are generated before the clock starts: the bench measures spanlake, not the generator.
    let per_client = target / CLIENTS as usize;
    let mut workloads = Vec::new();
    let mut trace_ids = Vec::new();
    for client in 0..CLIENTS {
        let mut generator = Generator::new(client + 1);
        let mut requests = Vec::new();
        let (mut spans, mut n) = (0, 0i64);
        while spans < per_client {
            let mut request = ExportTraceServiceRequest::default();
            for _ in 0..TRACES_PER_EXPORT {
                let trace = generator.trace_at(1_700_000_000_000_000_000 + n * 1_000_000);
                n += 1;
                if n % 997 == 0 {
                    trace_ids.push(hex::encode(
                        &trace.resource_spans[0].scope_spans[0].spans[0].trace_id,
                    ));
                }
                request.resource_spans.extend(trace.resource_spans);
            }
            spans += span_count(&request);
            requests.push(request);
        }
        workloads.push((requests, spans));
    }
    let total_spans: usize = workloads.iter().map(|w| w.1).sum();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (requests, _) in workloads {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
            for request in requests {
                client.export(request).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ingest = started.elapsed();
    println!(
        "ingest: {total_spans} spans in {:.2}s = {:.0} spans/s ({CLIENTS} gRPC clients, {TRACES_PER_EXPORT} traces per export, acknowledged after WAL fsync)",
        ingest.as_secs_f64(),
        total_spans as f64 / ingest.as_secs_f64()
    );

    let flush_started = Instant::now();
    let report = server.ingester.flush(true).await.unwrap();
    println!(
        "final flush: {} blocks, {} spans in {:.2}s",
        report.blocks,
        report.rows,
        flush_started.elapsed().as_secs_f64()
    );
    let blocks = dir.path().join("blocks");
    let spans_bytes = dir_bytes(&blocks, "data.parquet");
    let traces_bytes = dir_bytes(&blocks, "traces.parquet");
    println!(
        "storage: {:.1} bytes/span in data.parquet, {:.1} bytes/span with traces.parquet ({:.1} MiB total)",
        spans_bytes as f64 / total_spans as f64,
        (spans_bytes + traces_bytes) as f64 / total_spans as f64,
        (spans_bytes + traces_bytes) as f64 / (1 << 20) as f64
    );

    let ctx_engine = server.engine.clone();
    let mut latencies = Vec::new();
    for _round in 0..3 {
        for id in &trace_ids {
            let query = format!("SELECT * FROM spans WHERE trace_id = to_trace_id('{id}')");
            let started = Instant::now();
            let (_, batches) = ctx_engine.sql("single-tenant", &query).await.unwrap();
            latencies.push(started.elapsed());
            assert!(
                batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0,
                "trace {id} not found"
            );
        }
    }
    latencies.sort();
    println!(
        "trace by id over {total_spans} spans ({} lookups, all columns): p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );

    const SEARCHES: &[&str] = &[
        r#"{ span.http.route = "/checkout" }"#,
        "{ status = error }",
        "{ duration > 10ms }",
        r#"{ resource.service.name = "checkout" } >> { name =~ "UPDATE.*" }"#,
        "{ } | count() > 8",
    ];
    for query in SEARCHES {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let request = spanlake::query::search::SearchRequest {
                query: query.to_string(),
                range: spanlake::time::TimeRange::ALL,
                limit: 20,
                spss: 3,
            };
            let response = spanlake::query::search::search(
                &ctx_engine,
                &["single-tenant".to_string()],
                &request,
                |_, _| {},
            )
            .await
            .unwrap();
            times.push(started.elapsed());
            found = response.traces.len();
        }
        times.sort();
        let median = times[1];
        println!(
            "traceql {query}: median {:.1} ms over {total_spans} spans = {:.1} M spans/s ({found} traces returned)",
            median.as_secs_f64() * 1e3,
            total_spans as f64 / median.as_secs_f64() / 1e6
        );
    }

    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr);
    for (label, path, accept) in [
        ("v2 protobuf", "/api/v2/traces", "application/protobuf"),
        ("v1 JSON", "/api/traces", "application/json"),
    ] {
        let mut latencies = Vec::new();
        for id in &trace_ids {
            let started = Instant::now();
            let response = http
                .get(format!("{base}{path}/{id}"))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "trace {id}");
            response.bytes().await.unwrap();
            latencies.push(started.elapsed());
        }
        latencies.sort();
        println!(
            "HTTP trace by id ({label}, {} requests): p50 {:.2} ms, p95 {:.2} ms",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.95).as_secs_f64() * 1e3,
        );
    }
    const REQUESTS: usize = 10;
    for query in SEARCHES {
        let mut times = Vec::new();
        for _ in 0..REQUESTS {
            let started = Instant::now();
            let response = http
                .get(format!("{base}/api/search"))
                .query(&[
                    ("q", *query),
                    ("start", "1699999999"),
                    ("end", "1700003600"),
                    ("limit", "20"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{query}");
            response.bytes().await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "HTTP /api/search {query} ({REQUESTS} requests): p50 {:.1} ms, p95 {:.1} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
        );
    }
    server.shutdown().await;
}
