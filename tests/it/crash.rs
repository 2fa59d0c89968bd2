//! Crash safety: `kill -9` in the middle of ingest and flushes, five times over, loses no
//! acknowledged span and duplicates none.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::generator::Generator;

use crate::common::{ServeProcess, http_sql, spawn_serve};

fn spawn(data: &Path) -> ServeProcess {
    spawn_serve(
        data,
        &[
            "--trace-idle",
            "30ms",
            "--max-block-age",
            "0s",
            "--flush-check",
            "20ms",
        ],
    )
}

fn ids(batches: &[RecordBatch]) -> Vec<(String, String)> {
    batches
        .iter()
        .flat_map(|b| {
            let t = b.column(0).as_string::<i32>().clone();
            let s = b.column(1).as_string::<i32>().clone();
            (0..b.num_rows()).map(move |i| (t.value(i).to_string(), s.value(i).to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_loses_and_duplicates_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let mut sent_total = 0usize;
    for round in 0..5u64 {
        let mut process = spawn(data.path());
        let mut client = TraceServiceClient::connect(process.otlp_grpc.clone())
            .await
            .unwrap();
        let sender = {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut generator = Generator::new(1000 + round);
                let mut sent = 0;
                loop {
                    let request = generator.trace_at(sent as i64 * 1_000_000);
                    let spans: Vec<(String, String)> = request
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                        .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
                        .collect();
                    sent += 1;
                    if client.export(request).await.is_err() {
                        return sent;
                    }
                    acked.lock().unwrap().extend(spans);
                }
            })
        };
        // Let ingest and several flushes run, then kill while the sender is mid-stream.
        let before = acked.lock().unwrap().len();
        let target = before + 300 + 200 * round as usize;
        for _ in 0..60_000 {
            if acked.lock().unwrap().len() >= target || sender.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            !sender.is_finished(),
            "round {round}: the sender stopped before the kill"
        );
        process.child.kill().unwrap();
        process.child.wait().unwrap();
        sent_total += sender.await.unwrap();
    }

    let process = spawn(data.path());
    let batches = http_sql(
        &process.http,
        "SELECT id_hex(trace_id), id_hex(span_id) FROM spans",
    )
    .await
    .unwrap();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for id in ids(&batches) {
        *seen.entry(id).or_default() += 1;
    }
    let acked = acked.lock().unwrap();
    let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged spans are missing",
        acked.len()
    );
    assert_eq!(
        duplicated, 0,
        "{duplicated} spans are stored more than once"
    );
    assert!(sent_total >= 5, "each round sends until killed");
    let blocks = std::fs::read_dir(data.path().join("blocks/single-tenant/traces/shard-0"))
        .unwrap()
        .count();
    assert!(blocks > 0, "blocks were flushed between the kills");
    let mut process = process;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}
