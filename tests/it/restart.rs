//! Restarts: graceful shutdown flushes everything; a corrupt WAL segment does not stop startup.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use spanlake::generator::Generator;
use spanlake::schema::otlp::spans_from_request;

use crate::common::{single_i64, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_live_trace_and_empties_the_wal() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spanlake"))
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
        ])
        .args(["--trace-idle", "1h"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grpc = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("otlp_grpc="))
        .unwrap()
        .to_string();
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let mut generator = Generator::new(8);
    let mut sent = 0;
    for n in 0..30 {
        let request = generator.trace_at(n);
        sent += crate::common::span_count(&request) as i64;
        client.export(request).await.unwrap();
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());

    let wal_records: u64 = std::fs::read_dir(data.path().join("wal"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .map(|e| e.metadata().unwrap().len().saturating_sub(8))
        .sum();
    assert_eq!(
        wal_records, 0,
        "the WAL still holds records after a graceful shutdown"
    );
    let config = test_config(data.path());
    let opened = spanlake::server::open(&config, true).await.unwrap();
    assert_eq!(opened.ingester.live_span_count(), 0);
    let batches = opened
        .engine
        .sql("single-tenant", "SELECT count(*) FROM spans")
        .await
        .unwrap()
        .1;
    assert_eq!(single_i64(&batches), sent);
}

#[tokio::test]
async fn a_corrupt_wal_segment_is_quarantined_and_startup_continues() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.ingester.trace_idle = Duration::from_secs(3600);
    let opened = spanlake::server::open(&config, false).await.unwrap();
    let mut generator = Generator::new(9);
    for n in 0..3 {
        opened
            .ingester
            .push(
                "single-tenant",
                spans_from_request(&generator.trace_at(n)).unwrap(),
            )
            .await
            .unwrap();
    }
    drop(opened);
    let segment = std::fs::read_dir(config.wal_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "wal") && std::fs::metadata(p).unwrap().len() > 8
        })
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let reopened = spanlake::server::open(&config, false).await.unwrap();
    let report = reopened.ingester.replay_report();
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert!(report.quarantined[0].exists());
    let spans = 3;
    let before: usize = (0..spans)
        .map(|n| {
            spans_from_request(&Generator::new(9).trace_at(n))
                .unwrap()
                .len()
        })
        .sum();
    assert!(reopened.ingester.live_span_count() < before);
    let fresh = spans_from_request(&generator.trace_at(10)).unwrap();
    reopened
        .ingester
        .push("single-tenant", fresh)
        .await
        .unwrap();
}
