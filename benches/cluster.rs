//! One node against a cluster of three on the same machine: ingest, a full-scan aggregate and
//! a TraceQL search over the same spans, and the bytes the members moved between them.
//!
//! The three members run in this one process and share its cores, so the cluster cannot be
//! faster here: what this shows is the cost of the cluster's machinery (distribution of rows,
//! stages shipped between members, partial aggregates crossing the network) on identical
//! hardware, and how many bytes cross the cluster port for each query.
//!
//! `cargo bench --bench cluster`; `SPANLAKE_BENCH_CLUSTER_SPANS` sets the spans (default
//! 1,000,000; the 10,000,000 takes a few minutes per deployment),
//! `SPANLAKE_BENCH_RUNS` the runs per query (median printed, default 5).

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

fn requests(spans: usize) -> Vec<ExportTraceServiceRequest> {
    let mut generator = Generator::new(3).with_shape(TraceShape::Wide);
    let (mut all, mut made, mut n) = (Vec::new(), 0, 0i64);
    while made < spans {
        let mut request = ExportTraceServiceRequest::default();
        for _ in 0..TRACES_PER_REQUEST {
            let trace = generator.trace_at(START_NS + n * 1_000_000);
            n += 1;
            request.resource_spans.extend(trace.resource_spans);
        }
        made += span_count(&request);
        all.push(request);
    }
    all
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::loopback(dir);
    config.ingester.shards = SHARDS;
    config.ingester.trace_idle = Duration::from_secs(3600);
    config.ingester.max_block_age = Duration::from_secs(3600);
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

/// Sends every request through `server` with `CLIENTS` concurrent clients; spans per second.
async fn ingest(server: &Server, requests: &Arc<Vec<ExportTraceServiceRequest>>) -> f64 {
    let spans: usize = requests.iter().map(span_count).sum();
    let url = format!("http://{}", server.otlp_grpc_addr);
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let requests = Arc::clone(requests);
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.unwrap();
            // Each request is copied as it is sent: at 10M spans, copying every client's
            // share up front would double the requests' memory.
            for request in requests.iter().skip(c).step_by(CLIENTS) {
                client.export(request.clone()).await.unwrap();
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    spans as f64 / started.elapsed().as_secs_f64()
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
    let requests = Arc::new(requests(spans));
    let sent: usize = requests.iter().map(span_count).sum();
    let end_s = START_NS / 1_000_000_000 + (requests.len() * TRACES_PER_REQUEST) as i64 / 1000 + 2;

    let single_dir = tempfile::tempdir().unwrap();
    let single = vec![
        Server::start(config(single_dir.path()), false)
            .await
            .unwrap(),
    ];
    let single_ingest = ingest(&single[0], &requests).await;
    single[0].ingester.flush(true).await.unwrap();

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cluster = start_cluster(&dirs).await;
    let before = cluster_bytes(&cluster).await;
    let cluster_ingest = ingest(&cluster[0], &requests).await;
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
}
