//! One node against a cluster of three on the same machine: ingest, a full-scan aggregate and
//! a TraceQL search over the same spans, and the bytes the members moved between them.
//!
//! The three members run in this one process and share its cores, so the cluster cannot be
//! faster here: what this shows is the cost of the cluster's machinery (distribution of rows,
//! stages shipped between members, partial aggregates crossing the network) on identical
//! hardware, and how many bytes cross the cluster port for each query.
//!
//! `cargo bench --bench cluster`; `SPANLAKE_BENCH_CLUSTER_SPANS` sets the spans (default
//! 1,000,000), `SPANLAKE_BENCH_RUNS` the runs per query (median printed, default 5). Spans are
//! generated and sent in batches, and only the sending is timed. Traces are flushed to blocks
//! as they complete during the ingest (2 s idle), the rest at its end, so the queries read
//! blocks; the process's peak resident memory is printed last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::cluster::free_loopback_ports;
use spanlake::config::{ClusterSettings, Config, MemberSettings, WriteConsistency};
use spanlake::generator::{Generator, TraceShape};
use spanlake::schema::otlp::span_count;
use spanlake::server::Server;

const TRACES_PER_REQUEST: usize = 50;
const CLIENTS: usize = 4;
const SHARDS: u32 = 6;
const START_NS: i64 = 1_700_000_000_000_000_000;
const AGGREGATE: &str = "SELECT service_name, count(*), avg(duration_ns), max(duration_ns) \
                         FROM spans GROUP BY service_name ORDER BY service_name";
const SEARCH: &str = "%7B%20status%20%3D%20error%20%7D";

/// Spans generated and sent at a time: a 10M-span run never holds every request at once.
const BATCH_SPANS: usize = 200_000;

/// The requests of a run, about `spans` spans in all, made batch by batch; every run makes
/// the same ones.
struct Requests {
    generator: Generator,
    spans: usize,
    made: usize,
    traces: i64,
}

impl Requests {
    fn new(spans: usize) -> Self {
        Self {
            generator: Generator::new(3).with_shape(TraceShape::Wide),
            spans,
            made: 0,
            traces: 0,
        }
    }

    /// The next requests, of about [`BATCH_SPANS`] spans; none when all are made.
    fn next_batch(&mut self) -> Vec<ExportTraceServiceRequest> {
        let mut batch = Vec::new();
        let mut in_batch = 0;
        while self.made < self.spans && in_batch < BATCH_SPANS {
            let mut request = ExportTraceServiceRequest::default();
            for _ in 0..TRACES_PER_REQUEST {
                let trace = self.generator.trace_at(START_NS + self.traces * 1_000_000);
                self.traces += 1;
                request.resource_spans.extend(trace.resource_spans);
            }
            let spans = span_count(&request);
            self.made += spans;
            in_batch += spans;
            batch.push(request);
        }
        batch
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::loopback(dir);
    config.ingester.shards = SHARDS;
    config.ingester.trace_idle = Duration::from_secs(2);
    config.ingester.max_block_age = Duration::from_secs(5);
    config.compaction.enabled = false;
    config
}

async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Server> {
    let ports = free_loopback_ports(2 * dirs.len()).unwrap();
    let members: Vec<MemberSettings> = (0..dirs.len())
        .map(|i| MemberSettings {
            name: format!("node-{i}"),
            http: format!("127.0.0.1:{}", ports[2 * i]),
            internal: format!("127.0.0.1:{}", ports[2 * i + 1]),
        })
        .collect();
    let mut servers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = config(dir.path());
        config.http_listen = format!("127.0.0.1:{}", ports[2 * i]).parse().unwrap();
        config.cluster_listen = format!("127.0.0.1:{}", ports[2 * i + 1]).parse().unwrap();
        config.cluster = Some(ClusterSettings {
            self_name: format!("node-{i}"),
            members: members.clone(),
            replication_factor: 1,
            write_consistency: WriteConsistency::Quorum,
            health_check: Duration::from_secs(3600),
            partial_results: false,
        });
        servers.push(Server::start(config, false).await.unwrap());
    }
    for server in &servers {
        server.cluster.as_ref().unwrap().check_members().await;
    }
    servers
}

/// What a run's ingest sent and how fast.
struct Ingested {
    spans: usize,
    traces: i64,
    /// Spans per second of sending, generation not counted.
    rate: f64,
}

/// Sends about `spans` generated spans through `server` with `CLIENTS` concurrent clients,
/// batch by batch; only the sending is timed.
async fn ingest(server: &Server, spans: usize) -> Ingested {
    let url = format!("http://{}", server.otlp_grpc_addr);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(TraceServiceClient::connect(url.clone()).await.unwrap());
    }
    let mut requests = Requests::new(spans);
    let mut sending = Duration::ZERO;
    loop {
        let batch = Arc::new(requests.next_batch());
        if batch.is_empty() {
            break;
        }
        let started = Instant::now();
        let mut senders = Vec::new();
        for (c, client) in clients.iter().enumerate() {
            let (batch, mut client) = (Arc::clone(&batch), client.clone());
            senders.push(tokio::spawn(async move {
                for request in batch.iter().skip(c).step_by(CLIENTS) {
                    client.export(request.clone()).await.unwrap();
                }
            }));
        }
        for sender in senders {
            sender.await.unwrap();
        }
        sending += started.elapsed();
    }
    Ingested {
        spans: requests.made,
        traces: requests.traces,
        rate: requests.made as f64 / sending.as_secs_f64(),
    }
}

/// Bytes on every member's cluster port so far.
async fn cluster_bytes(servers: &[Server]) -> u64 {
    let mut total = 0;
    for server in servers {
        let text = reqwest::get(format!("http://{}/metrics", server.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        total += text
            .lines()
            .filter(|l| l.starts_with("spanlake_cluster_bytes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

/// Median time of `runs` runs of `query`, and the bytes the members moved per run.
async fn measure<F, Fut>(servers: &[Server], runs: usize, mut query: F) -> (Duration, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    query().await;
    let before = cluster_bytes(servers).await;
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        query().await;
        times.push(started.elapsed());
    }
    let moved = (cluster_bytes(servers).await - before) / runs as u64;
    times.sort();
    (times[times.len() / 2], moved)
}

async fn aggregate(server: &Server) {
    let (_, batches) = server
        .engine
        .sql(spanlake::tenant::SINGLE_TENANT, AGGREGATE)
        .await
        .unwrap();
    assert!(!batches.is_empty());
}

async fn search(server: &Server, end_s: i64) {
    let url = format!(
        "http://{}/api/search?q={SEARCH}&limit=20&start={}&end={end_s}",
        server.http_addr,
        START_NS / 1_000_000_000
    );
    let response = reqwest::get(url).await.unwrap();
    assert!(response.status().is_success());
    response.bytes().await.unwrap();
}

#[tokio::main]
async fn main() {
    let spans: usize = std::env::var("SPANLAKE_BENCH_CLUSTER_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("SPANLAKE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let single_dir = tempfile::tempdir().unwrap();
    let single = vec![
        Server::start(config(single_dir.path()), false)
            .await
            .unwrap(),
    ];
    let single_ingest = ingest(&single[0], spans).await;
    let sent = single_ingest.spans;
    let end_s = START_NS / 1_000_000_000 + single_ingest.traces / 1000 + 2;
    let single_ingest = single_ingest.rate;
    single[0].ingester.flush(true).await.unwrap();

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cluster = start_cluster(&dirs).await;
    let before = cluster_bytes(&cluster).await;
    let cluster_ingest = ingest(&cluster[0], spans).await.rate;
    let ingest_moved = cluster_bytes(&cluster).await - before;
    for member in &cluster {
        member.ingester.flush(true).await.unwrap();
    }

    println!(
        "{sent} spans, one node vs three members (replication factor 1) in one process on this machine"
    );
    println!("| measure | 1 node | 3 members | 3 / 1 | bytes between members |");
    println!("|---|---|---|---|---|");
    println!(
        "| ingest, {CLIENTS} clients (spans/s) | {single_ingest:.0} | {cluster_ingest:.0} | {:.2} | {:.1} MB ({:.0} B/span) |",
        cluster_ingest / single_ingest,
        ingest_moved as f64 / 1e6,
        ingest_moved as f64 / sent as f64
    );
    let (one, _) = measure(&single, runs, || aggregate(&single[0])).await;
    let (three, moved) = measure(&cluster, runs, || aggregate(&cluster[0])).await;
    println!(
        "| full-scan aggregate p50 | {:.1} ms | {:.1} ms | {:.2} | {:.1} kB |",
        one.as_secs_f64() * 1e3,
        three.as_secs_f64() * 1e3,
        three.as_secs_f64() / one.as_secs_f64(),
        moved as f64 / 1e3
    );
    let (one, _) = measure(&single, runs, || search(&single[0], end_s)).await;
    let (three, moved) = measure(&cluster, runs, || search(&cluster[0], end_s)).await;
    println!(
        "| TraceQL search `{{ status = error }}` p50 | {:.1} ms | {:.1} ms | {:.2} | {:.1} kB |",
        one.as_secs_f64() * 1e3,
        three.as_secs_f64() * 1e3,
        three.as_secs_f64() / one.as_secs_f64(),
        moved as f64 / 1e3
    );
    for server in single.into_iter().chain(cluster) {
        server.shutdown().await;
    }
    if let Some(peak) = peak_resident_bytes() {
        println!(
            "peak resident memory of the process (all four deployments): {:.1} GB",
            peak as f64 / 1e9
        );
    }
}

/// The process's peak resident memory, where `/proc` tells it.
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
