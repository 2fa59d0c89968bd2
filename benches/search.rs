//! Grafana's hot path, measured the way Grafana meets it: a real `spanlake serve` process,
//! loaded by `spanlake gen --shape wide` (about 14 spans a trace, each query below matching a
//! share of the traces) from one sequential OTLP client (50 traces, about 700 spans, per
//! request), then searched and read over Tempo's HTTP API.
//!
//! For each query: p50 / p95 over repeated warm requests, the traces found, and the time per
//! stage the server reports in its `Server-Timing` header (parse, plan, the execution of each
//! stage, encode). Searches run with Grafana's defaults (limit 20, spss 3) and exhaustively
//! (limit 100000); trace by id reads `/api/v2/traces/{id}` as protobuf. Each measure is
//! printed beside the Grafana Tempo figure measured on the same machine with the same
//! dataset, and the ratio.
//!
//! The dataset is measured twice: live (just acknowledged, in the ingester) and from blocks
//! (after a restart that flushed everything).
//!
//! `cargo bench --bench search`. Environment:
//! - `SPANLAKE_BENCH_TRACES`: traces generated (default 20000, 280k spans; 200000 is the 10×
//!   scale);
//! - `SPANLAKE_BENCH_RUNS`: measured requests per query (default 30);
//! - `SPANLAKE_BENCH_EXPLAIN`: a directory to write each query's `EXPLAIN ANALYZE` into.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::percentile;

/// Generated traces start here (2023-11-14T22:13:20Z) and are 10 ms apart.
const START_NS: i64 = 1_700_000_000_000_000_000;

/// Grafana Tempo 3.1-dev on this machine, same dataset (20,000 traces, one client), warm p50.
const QUERIES: &[(&str, f64)] = &[
    (r#"{ resource.service.name = "payment" }"#, 30.4),
    (r#"{ status = error }"#, 28.7),
    (
        r#"{ span.http.status_code >= 500 && resource.service.name = "checkout" }"#,
        36.6,
    ),
    (r#"{ duration > 200ms }"#, 24.9),
    (
        r#"{ span.http.route = "/api/cart" && kind = server }"#,
        51.1,
    ),
    (
        r#"{ resource.service.name = "frontend" } >> { span.db.system = "redis" }"#,
        84.2,
    ),
    (r#"{ } | count() > 20"#, 21.0),
    (r#"{ name =~ "GET.*" && span.retry = true }"#, 22.9),
];
const TEMPO_TRACE_BY_ID_MS: f64 = 35.7;

/// A `spanlake serve` child process and its HTTP address.
struct Serve {
    child: Child,
    http: String,
    otlp_grpc: String,
}

impl Serve {
    fn start(data: &std::path::Path, config: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spanlake"))
            .args(["serve", "--data-dir"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--otlp-grpc-listen", "127.0.0.1:0"])
            .args(["--otlp-http-listen", "127.0.0.1:0"])
            .args(["--flight-listen", "127.0.0.1:0"])
            .args(["--retention", "0s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spanlake serve starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("spanlake serve prints its addresses");
        let addr = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_string()
        };
        Self {
            http: format!("http://{}", addr("http")),
            otlp_grpc: format!("http://{}", addr("otlp_grpc")),
            child,
        }
    }

    /// SIGTERM, which flushes every live trace into blocks, then waits for the exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        let status = self.child.wait().expect("spanlake serve exits");
        assert!(status.success(), "spanlake serve exited with {status}");
    }
}

/// One measured query: latencies and the mean time per server stage.
struct Measured {
    latencies: Vec<Duration>,
    found: usize,
    stages: Vec<(String, f64)>,
}

impl Measured {
    fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies, q).as_secs_f64() * 1e3
    }

    fn stages_line(&self) -> String {
        self.stages
            .iter()
            .map(|(stage, ms)| format!("{stage} {ms:.1}"))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// `name;dur=1.5, …` into `(name, ms)`.
fn server_timing(header: &str) -> Vec<(String, f64)> {
    header
        .split(',')
        .filter_map(|part| {
            let (name, dur) = part.trim().split_once(";dur=")?;
            Some((name.to_string(), dur.parse().ok()?))
        })
        .collect()
}

async fn measure_search(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    limit: usize,
    (start, end): (i64, i64),
    runs: usize,
) -> Measured {
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/search"),
        &[
            ("q", query.to_string()),
            ("limit", limit.to_string()),
            ("spss", "3".into()),
            ("start", start.to_string()),
            ("end", end.to_string()),
        ],
    )
    .expect("a valid URL");
    let mut latencies = Vec::with_capacity(runs);
    let mut stage_sums: Vec<(String, f64)> = Vec::new();
    let mut found = 0;
    for run in 0..runs + 3 {
        let began = Instant::now();
        let response = http.get(url.clone()).send().await.expect("search answers");
        let timing = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .map(server_timing)
            .unwrap_or_default();
        assert!(
            response.status().is_success(),
            "{query}: {}",
            response.status()
        );
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("a body"))
                .expect("search answers JSON");
        let elapsed = began.elapsed();
        found = body["traces"].as_array().map_or(0, Vec::len);
        // The first three runs warm caches and are not counted.
        if run < 3 {
            continue;
        }
        latencies.push(elapsed);
        for (stage, ms) in timing {
            match stage_sums.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, sum)) => *sum += ms,
                None => stage_sums.push((stage, ms)),
            }
        }
    }
    latencies.sort();
    let stages = stage_sums
        .into_iter()
        .map(|(stage, sum)| (stage, sum / runs as f64))
        .collect();
    Measured {
        latencies,
        found,
        stages,
    }
}

/// The latency of one search, `{ }` with limit 20: the first a fresh server answers, before
/// any query warmed its caches.
async fn first_search(http: &reqwest::Client, base: &str, (start, end): (i64, i64)) -> Duration {
    let began = Instant::now();
    let response = http
        .get(format!("{base}/api/search"))
        .query(&[
            ("q", "{ }".to_string()),
            ("limit", "20".into()),
            ("start", start.to_string()),
            ("end", end.to_string()),
        ])
        .send()
        .await
        .expect("search answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.expect("a body");
    began.elapsed()
}

async fn measure_trace_by_id(http: &reqwest::Client, base: &str, ids: &[String]) -> Measured {
    let mut latencies = Vec::with_capacity(ids.len());
    for (n, id) in ids.iter().cycle().take(ids.len() + 3).enumerate() {
        let began = Instant::now();
        let response = http
            .get(format!("{base}/api/v2/traces/{id}"))
            .header("Accept", "application/protobuf")
            .send()
            .await
            .expect("trace by id answers");
        assert!(
            response.status().is_success(),
            "{id}: {}",
            response.status()
        );
        let body = response.bytes().await.expect("a body");
        assert!(!body.is_empty(), "{id}: an empty trace");
        if n >= 3 {
            latencies.push(began.elapsed());
        }
    }
    latencies.sort();
    Measured {
        latencies,
        found: ids.len(),
        stages: Vec::new(),
    }
}

/// Trace ids of `count` traces spread over the dataset, from an exhaustive search.
async fn some_trace_ids(
    http: &reqwest::Client,
    base: &str,
    window: (i64, i64),
    count: usize,
) -> Vec<String> {
    let url = format!(
        "{base}/api/search?q=%7B%7D&limit=100000&spss=1&start={}&end={}",
        window.0, window.1
    );
    let bytes = http
        .get(url)
        .send()
        .await
        .expect("search answers")
        .bytes()
        .await
        .expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("search answers JSON");
    let all: Vec<String> = body["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .filter_map(|t| t["traceID"].as_str().map(str::to_string))
        .collect();
    let step = (all.len() / count).max(1);
    all.into_iter().step_by(step).take(count).collect()
}

async fn explain_analyze(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    window: (i64, i64),
) -> String {
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/search"),
        &[
            ("q", query.to_string()),
            ("start", window.0.to_string()),
            ("end", window.1.to_string()),
            ("explain", "analyze".into()),
        ],
    )
    .expect("a valid URL");
    http.get(url)
        .send()
        .await
        .expect("explain answers")
        .text()
        .await
        .expect("explain answers text")
}

fn geomean(ratios: &[f64]) -> f64 {
    (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp()
}

async fn run_queries(
    phase: &str,
    base: &str,
    window: (i64, i64),
    runs: usize,
    scale_is_tempos: bool,
) {
    let http = reqwest::Client::new();
    let explain_dir = std::env::var_os("SPANLAKE_BENCH_EXPLAIN").map(std::path::PathBuf::from);
    println!("\n## {phase}\n");
    println!(
        "first search the server answered (`{{ }}`, limit 20; the process's caches cold, the OS page cache not): {:.1} ms\n",
        first_search(&http, base, window).await.as_secs_f64() * 1000.0
    );
    println!("| measure | p50 ms | p95 ms | found | Tempo p50 ms | ratio | stages (mean ms) |");
    println!("|---|---|---|---|---|---|---|");
    let ids = some_trace_ids(&http, base, window, 200).await;
    let by_id = measure_trace_by_id(&http, base, &ids).await;
    let tempo = |ms: f64| {
        if scale_is_tempos {
            format!("{ms:.1}")
        } else {
            "–".into()
        }
    };
    let ratio = |ours: f64, theirs: f64| {
        if scale_is_tempos {
            format!("{:.2}", ours / theirs)
        } else {
            "–".into()
        }
    };
    println!(
        "| trace by id (v2, protobuf) | {:.1} | {:.1} | {} | {} | {} | |",
        by_id.p(0.5),
        by_id.p(0.95),
        by_id.found,
        tempo(TEMPO_TRACE_BY_ID_MS),
        ratio(by_id.p(0.5), TEMPO_TRACE_BY_ID_MS),
    );
    let mut ratios = Vec::new();
    for (n, (query, tempo_ms)) in QUERIES.iter().enumerate() {
        let top = measure_search(&http, base, query, 20, window, runs).await;
        ratios.push(top.p(0.5) / tempo_ms);
        println!(
            "| `{}` | {:.1} | {:.1} | {} | {} | {} | {} |",
            query.replace('|', "\\|"),
            top.p(0.5),
            top.p(0.95),
            top.found,
            tempo(*tempo_ms),
            ratio(top.p(0.5), *tempo_ms),
            top.stages_line()
        );
        let all = measure_search(&http, base, query, 100_000, window, runs.div_ceil(3)).await;
        println!(
            "| ↳ exhaustive (limit 100000) | {:.1} | {:.1} | {} | | | {} |",
            all.p(0.5),
            all.p(0.95),
            all.found,
            all.stages_line()
        );
        if let Some(dir) = &explain_dir {
            std::fs::create_dir_all(dir).expect("the explain directory can be made");
            let text = explain_analyze(&http, base, query, window).await;
            std::fs::write(
                dir.join(format!("{phase}-{n}.txt")),
                format!("{query}\n\n{text}"),
            )
            .expect("explain output is written");
        }
    }
    if scale_is_tempos {
        println!(
            "\nsearch p50 / Tempo p50, geometric mean: {:.2} (goal ≤ 0.5)",
            geomean(&ratios)
        );
    }
}

#[tokio::main]
async fn main() {
    let traces: u64 = std::env::var("SPANLAKE_BENCH_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runs: usize = std::env::var("SPANLAKE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("spanlake.toml");
    // Nothing is flushed while the live phase runs; SIGTERM flushes it all for the next.
    std::fs::write(
        &config,
        "[ingester]\ntrace_idle = \"1h\"\nmax_block_age = \"1h\"\n",
    )
    .expect("the config is written");
    let data = dir.path().join("data");

    let serve = Serve::start(&data, &config);
    let began = Instant::now();
    let loaded = Command::new(env!("CARGO_BIN_EXE_spanlake"))
        .args(["gen", "--endpoint", &serve.otlp_grpc, "--signals", "traces"])
        .args(["--traces", &traces.to_string(), "--batch", "50"])
        .args(["--shape", "wide", "--start-ns", &START_NS.to_string()])
        .output()
        .expect("spanlake gen runs");
    assert!(
        loaded.status.success(),
        "spanlake gen failed: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    println!(
        "# search benchmark: {traces} traces, {runs} runs per query\n\ningest (spanlake gen, one sequential gRPC client, 50 traces a request, generation included): {} in {:.1}s",
        String::from_utf8_lossy(&loaded.stderr).trim(),
        began.elapsed().as_secs_f64()
    );
    let gen_said = String::from_utf8_lossy(&loaded.stderr);
    let spans: f64 = gen_said
        .split_once(" traces (")
        .and_then(|(_, rest)| rest.split_once(" spans)"))
        .and_then(|(n, _)| n.parse().ok())
        .expect("spanlake gen says how many spans it sent");
    let start_s = START_NS / 1_000_000_000 - 60;
    let end_s = (START_NS + traces as i64 * 10_000_000) / 1_000_000_000 + 60;
    let window = (start_s, end_s);
    let scale_is_tempos = traces == 20_000;
    run_queries(
        "live (in the ingester)",
        &serve.http,
        window,
        runs,
        scale_is_tempos,
    )
    .await;
    serve.stop();

    let serve = Serve::start(&data, &config);
    run_queries(
        "blocks (flushed, after a restart)",
        &serve.http,
        window,
        runs,
        scale_is_tempos,
    )
    .await;
    println!(
        "\nblocks on disk: {:.1} B/span",
        support::dir_bytes(&data.join("blocks"), ".parquet") as f64 / spans
    );
    serve.stop();
}
