//! An anomaly report over a day of spans, printed rather than asserted: `SPANLAKE_BENCH_SPANS`
//! spans (default 10,000,000) spread over 25 hours are written as blocks, with checkout's
//! latency tripled in the last hour; then the report compares that hour with the 24 hours
//! before, and the bench prints its wall time, the process's peak resident memory while it
//! ran, and what it found.
//!
//! `cargo bench --bench report`

use std::time::{Duration, Instant};

use spanlake::config::Config;
use spanlake::generator::{Generator, Injection};
use spanlake::report::{self, ReportOptions};
use spanlake::schema::otlp::spans_from_request;
use spanlake::server::Server;

const T0: i64 = 1_700_000_000_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
/// Spans per block written.
const BLOCK_SPANS: usize = 100_000;

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let spans_target: usize = std::env::var("SPANLAKE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::loopback(dir.path());
    config.compaction.enabled = false;
    config.ingester.flushed_grace = Duration::ZERO;
    config.retention.traces = Duration::ZERO;
    config.query.timeout = Duration::from_secs(3600);
    let server = Server::start(config, false)
        .await
        .expect("the server starts");

    // Spread the traces evenly over 25 hours, as many as make about `spans_target` spans.
    let mut sample = Generator::new(5);
    let sampled: usize = (0..1_000)
        .map(|n| spanlake::schema::otlp::span_count(&sample.trace_at(T0 + n)))
        .sum();
    let traces = (spans_target * 1_000 / sampled.max(1)).max(1) as i64;
    let spacing = 25 * HOUR / traces;
    let current_start = T0 + 24 * HOUR;
    let injection: Injection = format!("latency:service=checkout,factor=3,from={current_start}")
        .parse()
        .expect("a valid injection");
    let mut generator = Generator::new(5).with_injections(vec![injection]);
    let started = Instant::now();
    let (mut rows, mut total) = (Vec::new(), 0usize);
    for n in 0..traces {
        let trace = generator.trace_at(T0 + n * spacing);
        rows.extend(spans_from_request(&trace).expect("generated spans convert"));
        if rows.len() >= BLOCK_SPANS || n + 1 == traces {
            total += rows.len();
            let block = std::mem::take(&mut rows);
            server
                .ingester
                .push(spanlake::tenant::SINGLE_TENANT, block)
                .await
                .expect("the spans are taken");
            server
                .ingester
                .flush(true)
                .await
                .expect("the flush succeeds");
        }
    }
    println!(
        "{total} spans over 25 h written as blocks in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let options = ReportOptions {
        current: Some(format!(
            "{}..{}",
            current_start / 1_000_000_000,
            (current_start + HOUR) / 1_000_000_000
        )),
        baseline: Some(format!(
            "{}..{}",
            T0 / 1_000_000_000,
            current_start / 1_000_000_000
        )),
        ..Default::default()
    };
    let rss_before = status_kib("VmRSS").unwrap_or(0);
    // Resets the peak resident size to the current one (Linux), so VmHWM is the report's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    for run in 0..2 {
        let started = Instant::now();
        let made = report::run(
            &server.engine,
            spanlake::tenant::SINGLE_TENANT,
            &options,
            spanlake::time::now_ns(),
        )
        .await
        .expect("the report is made");
        let html = report::render::html(&made).expect("the report draws");
        let elapsed = started.elapsed();
        println!(
            "report {}: {:.2}s, {} groups, {} tests, {} findings, {} KiB of HTML; peak RSS {} MiB (was {} MiB before)",
            if run == 0 { "cold" } else { "warm" },
            elapsed.as_secs_f64(),
            made.groups_compared,
            made.tests_run,
            made.findings.len(),
            html.len() / 1024,
            status_kib("VmHWM").unwrap_or(0) / 1024,
            rss_before / 1024
        );
        if run == 0 {
            for finding in made.findings.iter().take(10) {
                println!("  {:?}: {}", finding.severity, finding.summary);
            }
        }
    }
    server.shutdown().await;
}
