//! Restarts: graceful shutdown flushes everything; a corrupt WAL segment does not stop startup.

use std::process::Command;
use std::time::Duration;

use spanlake::generator::Generator;
use spanlake::schema::otlp::spans_from_request;

use crate::common::{engine_count, spawn_serve, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_live_trace_and_empties_the_wal() {
    let data = tempfile::tempdir().unwrap();
    let mut process = spawn_serve(data.path(), &["--trace-idle", "1h"]);
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            process.otlp_grpc.clone(),
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
    let pid = process.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(process.child.wait().unwrap().success());

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
    assert_eq!(
        engine_count(&opened.engine, "SELECT count(*) FROM spans").await,
        sent
    );
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

#[tokio::test]
async fn a_second_writer_of_a_data_directory_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let config = test_config(data.path());
    let opened = spanlake::server::open(&config, false).await.unwrap();
    let Err(refused) = spanlake::server::open(&config, false).await else {
        panic!("a second writer opened the data directory");
    };
    assert!(
        refused
            .to_string()
            .contains("in use by another spanlake process"),
        "{refused}"
    );
    // Readers open it meanwhile; once the writer is gone, another may write.
    spanlake::server::open(&config, true).await.unwrap();
    drop(opened);
    spanlake::server::open(&config, false).await.unwrap();
}
