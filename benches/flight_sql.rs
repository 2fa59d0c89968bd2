//! Flight SQL, measured and printed, never asserted:
//! - throughput of one large `SELECT` streamed over Arrow Flight SQL and over SQL over HTTP
//!   (Arrow IPC), from a server in the same process: rows/s and the peak resident memory of the
//!   process while each answer streams;
//! - eight analytic queries over Flight SQL on generated spans flushed to Parquet, and the same
//!   queries in DuckDB reading the same Parquet files in process (`benches/duckdb_queries.py`,
//!   with the Python of `SPANLAKE_BENCH_PYTHON` or `.venv`, DuckDB from
//!   `benches/requirements.txt`), in three alternating rounds: the median of each, their ratio
//!   and the geomean.
//!
//! `cargo bench --bench flight_sql`; `SPANLAKE_BENCH_ROWS` sets the large answer's size
//! (default 10,000,000 rows of two Int64 columns), `SPANLAKE_BENCH_SPANS` the spans of the
//! analytic queries (default 1,000,000).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::StreamExt;
use spanlake::config::Config;
use spanlake::generator::Generator;
use spanlake::server::Server;
use tonic::transport::Channel;

/// The analytic queries: a name, spanlake's SQL and DuckDB's where its dialect differs.
const ANALYTICS: &[(&str, &str, Option<&str>)] = &[
    ("count", "SELECT count(*) FROM spans", None),
    (
        "spans by service",
        "SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 2 DESC",
        None,
    ),
    (
        "mean duration by service",
        "SELECT service_name, avg(duration_ns) FROM spans GROUP BY 1 ORDER BY 1",
        None,
    ),
    (
        "error rate by route",
        "SELECT http_route, count(*) AS n, avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS rate \
         FROM spans WHERE kind = 'server' GROUP BY 1 ORDER BY 3 DESC, 1",
        None,
    ),
    (
        "slowest operations",
        "SELECT name, max(duration_ns) AS slowest FROM spans GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
        None,
    ),
    (
        "distinct traces",
        "SELECT count(DISTINCT trace_id) FROM spans",
        None,
    ),
    (
        "p95 by service",
        "SELECT service_name, approx_percentile_cont(duration_ns, 0.95) FROM spans GROUP BY 1 ORDER BY 1",
        Some(
            "SELECT service_name, approx_quantile(duration_ns, 0.95) FROM spans GROUP BY 1 ORDER BY 1",
        ),
    ),
    (
        "spans per minute",
        "SELECT CAST(start_time AS BIGINT) / 60000000000 AS minute, count(*) FROM spans GROUP BY 1 ORDER BY 1",
        // DuckDB reads the column as TIMESTAMPTZ_NS, which neither casts nor truncates.
        Some(
            "SELECT epoch_ns(start_time) // 60000000000 AS minute, count(*) FROM spans GROUP BY 1 ORDER BY 1",
        ),
    ),
];

/// Alternating rounds of the analytic queries, DuckDB's and spanlake's.
const ROUNDS: usize = 3;

/// The median of `values`.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median wall time of `repeats` runs of `sql` over Flight SQL, and its row count.
async fn flight_median(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
    repeats: usize,
) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..repeats {
        let started = Instant::now();
        let info = client.execute(sql.to_string(), None).await.unwrap();
        rows = 0;
        for endpoint in info.endpoint {
            let mut stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
            while let Some(batch) = stream.next().await {
                rows += batch.unwrap().num_rows();
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], rows)
}

/// The same queries in DuckDB over `blocks` (a glob): name → (median seconds, rows), or why
/// DuckDB could not run.
fn duckdb_medians(
    blocks: &str,
    repeats: usize,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    use std::io::Write;
    let python = std::env::var("SPANLAKE_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_queries.py");
    let queries: Vec<serde_json::Value> = ANALYTICS
        .iter()
        .map(|(name, sql, duck)| serde_json::json!({"name": name, "sql": duck.unwrap_or(sql)}))
        .collect();
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .arg(blocks)
        .arg(repeats.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(serde_json::Value::from(queries).to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

/// The process's peak resident memory since the last reset, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn report(door: &str, rows: usize, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib().map_or("unknown".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "{door}: {rows} rows in {seconds:.2}s = {:.2} M rows/s, peak RSS {peak}",
        rows as f64 / seconds / 1e6
    );
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SPANLAKE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let config = Config::loopback(dir.path());
    let server = Server::start(config, false).await.unwrap();
    let sql = format!("SELECT value, value * 2 AS twice FROM generate_series(1, {rows})");

    reset_peak_rss();
    let started = Instant::now();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let info = client.execute(sql.clone(), None).await.unwrap();
    let mut received = 0;
    for endpoint in info.endpoint {
        let mut stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        while let Some(batch) = stream.next().await {
            received += batch.unwrap().num_rows();
        }
    }
    report("Flight SQL", received, started);

    reset_peak_rss();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}{}",
            server.http_addr,
            spanlake::api::http::SQL_PATH
        ))
        .body(sql)
        .send()
        .await
        .unwrap();
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    let mut body = response.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = body.next().await {
        let mut buffer = arrow::buffer::Buffer::from(chunk.unwrap().to_vec());
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer).unwrap() {
                received += batch.num_rows();
            }
        }
    }
    report("HTTP Arrow IPC", received, started);

    // Analytic queries over generated spans, all flushed to Parquet.
    let spans_wanted: usize = std::env::var("SPANLAKE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut generator = Generator::new(7);
    let mut otlp = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{}", server.otlp_grpc_addr),
    )
    .await
    .unwrap();
    let start_ns = 1_700_000_000_000_000_000i64;
    let mut sent = 0;
    let mut n = 0i64;
    while sent < spans_wanted {
        let mut batch = generator.trace_at(start_ns + n * 50_000_000);
        n += 1;
        for _ in 1..50 {
            let more = generator.trace_at(start_ns + n * 50_000_000);
            n += 1;
            batch.resource_spans.extend(more.resource_spans);
        }
        sent += spanlake::schema::otlp::span_count(&batch);
        otlp.export(batch).await.unwrap();
    }
    server.ingester.flush(true).await.unwrap();
    let blocks = format!("{}/blocks/**/data.parquet", dir.path().display());
    println!(
        "analytic queries over {sent} spans (median of 3 alternating rounds of medians of 5; DuckDB in process on the same Parquet files)"
    );
    // Both sides run in alternating rounds, each query's figure the median of its rounds'
    // medians, so that a slower spell of the machine does not fall on one side only.
    let mut flight_rounds: Vec<Vec<(Duration, usize)>> = Vec::new();
    let mut duck_rounds = Vec::new();
    let mut duck_error = None;
    for _ in 0..ROUNDS {
        match duckdb_medians(&blocks, 5) {
            Ok(d) => duck_rounds.push(d),
            Err(why) => duck_error = Some(why),
        }
        let mut round = Vec::new();
        for (_, sql, _) in ANALYTICS {
            round.push(flight_median(&mut client, sql, 5).await);
        }
        flight_rounds.push(round);
    }
    if let Some(why) = &duck_error {
        println!(
            "DuckDB not run ({}): install it with .venv/bin/pip install -r benches/requirements.txt",
            why.trim()
        );
    }
    let mut ratios = Vec::new();
    for (i, (name, _, _)) in ANALYTICS.iter().enumerate() {
        let rows = flight_rounds[0][i].1;
        let flight_ms = median(flight_rounds.iter().map(|r| r[i].0.as_secs_f64() * 1e3));
        let duck: Vec<&serde_json::Value> =
            duck_rounds.iter().filter_map(|d| d.get(*name)).collect();
        if duck.is_empty() || duck_error.is_some() {
            println!("  {name}: Flight SQL {flight_ms:.1} ms ({rows} rows)");
            continue;
        }
        let duck_ms = median(duck.iter().map(|m| m[0].as_f64().unwrap_or(f64::NAN) * 1e3));
        let ratio = flight_ms / duck_ms;
        ratios.push(ratio);
        println!(
            "  {name}: Flight SQL {flight_ms:.1} ms, DuckDB {duck_ms:.1} ms, ratio {ratio:.2} ({rows} rows; DuckDB {} rows)",
            duck[0][1]
        );
    }
    if !ratios.is_empty() {
        let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        println!("  geomean Flight SQL / DuckDB: {geomean:.2}");
    }
    server.shutdown().await;
}
