//! Many small blocks before and after compaction, printed rather than asserted: spans arrive
//! as `SPANLAKE_BENCH_BLOCKS` small blocks (default 1,000) holding `SPANLAKE_BENCH_SPANS` spans
//! (default 10,000,000); then trace by id (`/api/v2/traces/{id}`, p50 / p99) and a TraceQL
//! search (`/api/search`, p50) are timed, the blocks are compacted, and both are timed again.
//!
//! `SPANLAKE_BENCH_STORAGE=s3` keeps the blocks in an S3-compatible server (moto's server
//! mode, from the `.venv` that `scripts/test` sets up) on 127.0.0.1 instead of local disk.
//!
//! `cargo bench --bench lifecycle`

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use spanlake::config::Config;
use spanlake::generator::Generator;
use spanlake::schema::otlp::spans_from_request;
use spanlake::server::Server;
use spanlake::storage::Storage;
use support::{dir_bytes, percentile};

const T0: i64 = 1_700_000_000_000_000_000;

/// An S3-compatible server on a free loopback port, or `None` for local disk.
fn s3() -> Option<(std::process::Child, BTreeMap<String, String>)> {
    if std::env::var("SPANLAKE_BENCH_STORAGE").as_deref() != Ok("s3") {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let child = std::process::Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto is installed in .venv (scripts/test sets it up)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "bench"),
        ("aws_secret_access_key", "bench"),
        ("aws_region", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Some((child, options))
}

async fn create_bucket(endpoint: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(endpoint).send().await.is_ok() {
            let created = http.put(format!("{endpoint}/bench")).send().await.unwrap();
            assert!(created.status().is_success());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the S3-compatible server did not start");
}

/// Trace by id p50 / p99 and search p50, in milliseconds, over HTTP as Grafana asks.
async fn measure(server: &Server, ids: &[String]) -> (f64, f64, f64) {
    let http = reqwest::Client::new();
    let mut lookups = Vec::new();
    for id in ids {
        let started = Instant::now();
        let response = http
            .get(format!("http://{}/api/v2/traces/{id}", server.http_addr))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "trace {id}");
        response.bytes().await.unwrap();
        lookups.push(started.elapsed());
    }
    lookups.sort();
    let mut searches = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let response = http
            .get(format!("http://{}/api/search", server.http_addr))
            .query(&[
                (
                    "q",
                    "{ status = error && resource.service.name = \"payment\" }",
                ),
                ("limit", "20"),
                ("start", &(T0 / 1_000_000_000).to_string()),
                ("end", &(T0 / 1_000_000_000 + 7 * 24 * 3600).to_string()),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        assert!(
            status.is_success(),
            "search: {status} {}",
            String::from_utf8_lossy(&body)
        );
        searches.push(started.elapsed());
    }
    searches.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(percentile(&lookups, 0.5)),
        ms(percentile(&lookups, 0.99)),
        ms(percentile(&searches, 0.5)),
    )
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let spans_target = env("SPANLAKE_BENCH_SPANS", 10_000_000);
    let blocks = env("SPANLAKE_BENCH_BLOCKS", 1_000).max(1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::loopback(dir.path());
    config.compaction.enabled = false;
    config.ingester.flushed_grace = Duration::ZERO;
    config.retention.traces = Duration::ZERO;
    // Searches over many blocks in a slow store may take longer than a dashboard would wait.
    config.query.timeout = Duration::from_secs(1800);
    let s3 = s3();
    let storage_name = match &s3 {
        Some((_, options)) => {
            create_bucket(&options["aws_endpoint"]).await;
            config.storage_url = Some("s3://bench/blocks".into());
            config.storage_options = options.clone();
            "S3-compatible server (moto)"
        }
        None => "local disk",
    };
    let server = Server::start(config.clone(), false).await.unwrap();

    let per_block = spans_target / blocks;
    let mut generator = Generator::new(11);
    let mut ids = Vec::new();
    let (mut n, mut total) = (0i64, 0usize);
    let started = Instant::now();
    for _ in 0..blocks {
        let mut rows = Vec::new();
        while rows.len() < per_block {
            let trace = generator.trace_at(T0 + n * 1_000_000);
            n += 1;
            let spans = spans_from_request(&trace).unwrap();
            if n % 499 == 0 && ids.len() < 200 {
                ids.push(hex::encode(spans[0].trace_id));
            }
            rows.extend(spans);
        }
        total += rows.len();
        server.ingester.push("single-tenant", rows).await.unwrap();
        server.ingester.flush(true).await.unwrap();
    }
    let on_disk = || dir_bytes(&dir.path().join("blocks"), ".parquet") as f64 / (1 << 20) as f64;
    println!(
        "{total} spans in {blocks} blocks on {storage_name}, written in {:.1}s ({:.1} MiB of Parquet on local disk)",
        started.elapsed().as_secs_f64(),
        on_disk()
    );

    let (p50, p99, search) = measure(&server, &ids).await;
    println!(
        "before compaction: trace by id p50 {p50:.1} ms, p99 {p99:.1} ms; search p50 {search:.0} ms"
    );
    let storage = Storage::open_with(&config.storage_url(), &config.storage_options).unwrap();
    let lifecycle = spanlake::server::lifecycle(&config, &storage, server.engine.catalog());
    let started = Instant::now();
    let mut compactions = 0;
    loop {
        let report = lifecycle.run_once(spanlake::time::now_ns()).await.unwrap();
        if report.compactions == 0 {
            break;
        }
        compactions += report.compactions;
    }
    lifecycle.delete_all_retired().await.unwrap();
    let left = server.engine.catalog().all_blocks("single-tenant").len();
    println!(
        "compaction: {compactions} compactions in {:.1}s, {blocks} blocks -> {left} ({:.1} MiB of Parquet on local disk)",
        started.elapsed().as_secs_f64(),
        on_disk()
    );
    let (p50, p99, search) = measure(&server, &ids).await;
    println!(
        "after compaction: trace by id p50 {p50:.1} ms, p99 {p99:.1} ms; search p50 {search:.0} ms"
    );
    server.shutdown().await;
    if let Some((mut child, _)) = s3 {
        let _ = child.kill();
        let _ = child.wait();
    }
}
