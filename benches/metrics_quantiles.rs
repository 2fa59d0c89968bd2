//! Percentiles over time, measured and printed, never asserted.
//!
//! Generated spans over one hour are sent over OTLP and flushed to Parquet; then
//! `quantile_over_time(duration, .5, .95, .99) by (resource.service.name)` with a one-minute
//! step runs over HTTP (median wall time of 3, peak resident memory of the process), and the
//! same percentiles per service and minute are computed three more ways in SQL: exactly (the
//! lower quantile of the sorted durations), with DataFusion's `approx_percentile_cont`
//! (t-digest) and with `approx_quantile_dd` (the mergeable sketch). Each estimate's relative
//! error against the exact value is reported as its mean and maximum. The peak memory is the
//! whole process's, the server's data in memory included (printed beside it).
//!
//! Last, the time of one median per trace (a GROUP BY with about 250,000 groups) through each
//! function.
//!
//! `cargo bench --bench metrics_quantiles`; `SPANLAKE_BENCH_SPANS` sets the span count
//! (default 1,000,000).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use spanlake::config::Config;
use spanlake::generator::Generator;
use spanlake::server::Server;

const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];
const STEP_S: i64 = 60;
const NS: i64 = 1_000_000_000;

/// The process's peak resident memory since the last reset, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The process's resident memory now, in MiB (Linux).
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// (service, interval end in ms) → one value per quantile.
type PerGroup = BTreeMap<(String, i64), Vec<f64>>;

fn urlencoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn sql(server: &Server, query: &str) -> (Vec<RecordBatch>, Duration) {
    let started = Instant::now();
    let (_, batches) = server.engine.sql("single-tenant", query).await.unwrap();
    (batches, started.elapsed())
}

/// Per (service, interval) estimates from a query answering service, interval index and one
/// column per quantile.
fn read_estimates(batches: &[RecordBatch], grid_start_ns: i64) -> PerGroup {
    let mut out = PerGroup::new();
    for batch in batches {
        let services =
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let services = services.as_string::<i32>();
        let intervals = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let end_ms = (grid_start_ns + (intervals.value(row) + 1) * STEP_S * NS) / 1_000_000;
            let values = (0..QUANTILES.len())
                .map(|q| {
                    let column = arrow::compute::cast(
                        batch.column(2 + q),
                        &arrow::datatypes::DataType::Float64,
                    )
                    .unwrap();
                    column.as_primitive::<Float64Type>().value(row) / 1e9
                })
                .collect();
            out.insert((services.value(row).to_string(), end_ms), values);
        }
    }
    out
}

/// Mean and maximum relative error of `estimates` against `exact`, per quantile.
fn errors(exact: &PerGroup, estimates: &PerGroup) -> Vec<(f64, f64)> {
    (0..QUANTILES.len())
        .map(|q| {
            let mut sum = 0.0;
            let mut max: f64 = 0.0;
            let mut n = 0;
            for (key, values) in exact {
                let Some(estimate) = estimates.get(key) else {
                    continue;
                };
                let error = (estimate[q] - values[q]).abs() / values[q];
                sum += error;
                max = max.max(error);
                n += 1;
            }
            (sum / n.max(1) as f64, max)
        })
        .collect()
}

fn print_errors(name: &str, elapsed: Duration, errors: &[(f64, f64)]) {
    let parts: Vec<String> = QUANTILES
        .iter()
        .zip(errors)
        .map(|(q, (mean, max))| {
            format!(
                "p{}: mean {:.3}% max {:.3}%",
                q * 100.0,
                mean * 100.0,
                max * 100.0
            )
        })
        .collect();
    println!(
        "{name:<28} {:>8.0} ms   {}",
        elapsed.as_secs_f64() * 1e3,
        parts.join(", ")
    );
}

#[tokio::main]
async fn main() {
    let spans_wanted: usize = std::env::var("SPANLAKE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::loopback(dir.path());
    config.query.metrics_end_cutoff = Duration::ZERO;
    let server = Server::start(config, false).await.unwrap();

    // One hour of traces, evenly spread, starting on a whole minute.
    let start_ns = 1_699_999_980 * NS;
    let hour_ns = 3600 * NS;
    let mut generator = Generator::new(11);
    let mut otlp = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{}", server.otlp_grpc_addr),
    )
    .await
    .unwrap();
    // About four spans per generated trace.
    let traces = (spans_wanted / 4).max(1) as i64;
    let gap = hour_ns / traces;
    let mut sent = 0;
    let mut n = 0i64;
    while sent < spans_wanted && n < traces {
        let mut batch = generator.trace_at(start_ns + n * gap);
        n += 1;
        while batch.resource_spans.len() < 50 && n < traces {
            batch
                .resource_spans
                .extend(generator.trace_at(start_ns + n * gap).resource_spans);
            n += 1;
        }
        sent += spanlake::schema::otlp::span_count(&batch);
        otlp.export(batch).await.unwrap();
    }
    server.ingester.flush(true).await.unwrap();
    println!(
        "{sent} spans over one hour, flushed to Parquet; step 1m, quantiles .5 .95 .99 by service"
    );

    // The TraceQL metrics query over HTTP.
    let end_s = start_ns / NS + 3600;
    let query = "{ } | quantile_over_time(duration, .5, .95, .99) by (resource.service.name)";
    let url = format!(
        "http://{}/api/metrics/query_range?q={}&start={}&end={end_s}&step=60s",
        server.http_addr,
        urlencoded(query),
        start_ns / NS,
    );
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut body = serde_json::Value::Null;
    reset_peak_rss();
    let before = rss_mib().map_or("unknown".to_string(), |m| format!("{m:.0} MiB"));
    for _ in 0..3 {
        let started = Instant::now();
        let response = client.get(&url).send().await.unwrap();
        assert!(response.status().is_success());
        body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let peak = peak_rss_mib().map_or("unknown".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "quantile_over_time over HTTP: median {:.0} ms, peak RSS {peak} (the server held {before} before)",
        times[1].as_secs_f64() * 1e3
    );
    let without = url.replace(
        "&start=",
        &format!("{}&start=", urlencoded(" with(exemplars=false)")),
    );
    let mut quiet = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let response = client.get(&without).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        quiet.push(started.elapsed());
    }
    quiet.sort();
    println!(
        "the same without exemplars: median {:.0} ms",
        quiet[1].as_secs_f64() * 1e3
    );

    // The grid the endpoint used: start rounded down to the step, less one step.
    let grid_start_ns = (start_ns / (STEP_S * NS)) * STEP_S * NS - STEP_S * NS;
    let mut endpoint = PerGroup::new();
    for series in body["series"].as_array().unwrap() {
        let labels = series["labels"].as_array().unwrap();
        let service = labels[0]["value"]["stringValue"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let p = labels[1]["value"]["doubleValue"].as_f64().unwrap();
        let q = QUANTILES.iter().position(|x| *x == p).unwrap();
        for sample in series["samples"].as_array().unwrap() {
            let ts: i64 = sample["timestampMs"].as_str().unwrap().parse().unwrap();
            let value = sample["value"].as_f64().unwrap_or(0.0);
            endpoint
                .entry((service.clone(), ts))
                .or_insert_with(|| vec![0.0; QUANTILES.len()])[q] = value;
        }
    }

    // Exact lower quantiles from all durations.
    let interval = format!(
        "(CAST(start_time AS BIGINT) - {grid_start_ns} - 1) / {}",
        STEP_S * NS
    );
    let (batches, exact_time) = sql(
        &server,
        &format!(
            "SELECT service_name, {interval} AS k, duration_ns FROM spans \
             WHERE CAST(start_time AS BIGINT) > {grid_start_ns}"
        ),
    )
    .await;
    let mut durations: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for batch in &batches {
        let services =
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let services = services.as_string::<i32>();
        let ks = batch.column(1).as_primitive::<Int64Type>();
        let ds = batch.column(2).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if services.is_null(row) {
                continue;
            }
            let end_ms = (grid_start_ns + (ks.value(row) + 1) * STEP_S * NS) / 1_000_000;
            durations
                .entry((services.value(row).to_string(), end_ms))
                .or_default()
                .push(ds.value(row));
        }
    }
    let exact: PerGroup = durations
        .into_iter()
        .map(|(key, mut values)| {
            values.sort_unstable();
            let n = values.len();
            let quantiles = QUANTILES
                .iter()
                .map(|q| values[(q * (n - 1) as f64).floor() as usize] as f64 / 1e9)
                .collect();
            (key, quantiles)
        })
        .collect();

    println!(
        "{:<28} {:>11}   relative error against exact, per (service, minute)",
        "", "time"
    );
    print_errors("exact (all values, sorted)", exact_time, &[(0.0, 0.0); 3]);
    print_errors(
        "TraceQL quantile_over_time",
        times[1],
        &errors(&exact, &endpoint),
    );
    for (name, function) in [
        ("approx_percentile_cont", "approx_percentile_cont"),
        ("approx_quantile_dd (sketch)", "approx_quantile_dd"),
    ] {
        let columns: Vec<String> = QUANTILES
            .iter()
            .map(|q| format!("{function}(duration_ns, {q})"))
            .collect();
        let (batches, elapsed) = sql(
            &server,
            &format!(
                "SELECT service_name, {interval} AS k, {} FROM spans \
                 WHERE CAST(start_time AS BIGINT) > {grid_start_ns} AND service_name IS NOT NULL \
                 GROUP BY 1, 2",
                columns.join(", ")
            ),
        )
        .await;
        print_errors(
            name,
            elapsed,
            &errors(&exact, &read_estimates(&batches, grid_start_ns)),
        );
    }

    // Many groups: one quantile per trace (GroupsAccumulator paths).
    let traces_sql = |function: &str| {
        format!("SELECT trace_id, {function}(duration_ns, 0.5) FROM spans GROUP BY trace_id")
    };
    for (name, function) in [
        ("approx_percentile_cont", "approx_percentile_cont"),
        ("approx_quantile_dd (sketch)", "approx_quantile_dd"),
        ("median (exact)", "percentile_cont"),
    ] {
        let (batches, elapsed) = sql(&server, &traces_sql(function)).await;
        let groups: usize = batches.iter().map(RecordBatch::num_rows).sum();
        println!(
            "{name:<28} {:>8.0} ms   one p50 per trace, {groups} groups",
            elapsed.as_secs_f64() * 1e3
        );
    }
}
