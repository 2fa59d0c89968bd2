//! Crash safety: `kill -9` in the middle of ingest and flushes of all three signals, five
//! times over, loses no acknowledged span, log record or metric point and duplicates none.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
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

fn seq_attribute(seq: i64) -> Vec<KeyValue> {
    vec![KeyValue {
        key: "seq".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(seq)),
        }),
        ..Default::default()
    }]
}

/// Two log records told apart by their `seq` attribute: `2 * seq` and `2 * seq + 1`.
fn logs(seq: i64) -> ExportLogsServiceRequest {
    let record = |n: i64| LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000 + n as u64,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!("record {n}"))),
        }),
        attributes: seq_attribute(n),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![record(2 * seq), record(2 * seq + 1)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One gauge point told apart by its `seq` attribute.
fn points(seq: i64) -> ExportMetricsServiceRequest {
    let gauge = Metric {
        name: "crash.gauge".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: 1_700_000_000_000_000_000 + seq as u64,
                value: Some(number_data_point::Value::AsInt(seq)),
                attributes: seq_attribute(seq),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![gauge],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn seqs(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

/// Checks that `stored` holds every acknowledged key exactly once.
fn exactly_once<K: std::hash::Hash + Eq + std::fmt::Debug>(
    what: &str,
    acked: &HashSet<K>,
    stored: Vec<K>,
) {
    let mut seen: HashMap<K, usize> = HashMap::new();
    for key in stored {
        *seen.entry(key).or_default() += 1;
    }
    let missing = acked.iter().filter(|k| !seen.contains_key(*k)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged {what} are missing",
        acked.len()
    );
    assert_eq!(
        duplicated, 0,
        "{duplicated} {what} are stored more than once"
    );
}

/// What the senders had acknowledged when the server was killed.
#[derive(Default)]
struct Acked {
    spans: HashSet<(String, String)>,
    logs: HashSet<i64>,
    points: HashSet<i64>,
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
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut sent_total = 0usize;
    for round in 0..5u64 {
        let mut process = spawn(data.path());
        let channel = tonic::transport::Endpoint::from_shared(process.otlp_grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let sender = {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut traces = TraceServiceClient::new(channel.clone());
                let mut log_client = LogsServiceClient::new(channel.clone());
                let mut metric_client = MetricsServiceClient::new(channel);
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
                    let seq = (round * 1_000_000 + sent as u64) as i64;
                    sent += 1;
                    if traces.export(request).await.is_err() {
                        return sent;
                    }
                    acked.lock().unwrap().spans.extend(spans);
                    if log_client.export(logs(seq)).await.is_err() {
                        return sent;
                    }
                    acked.lock().unwrap().logs.extend([2 * seq, 2 * seq + 1]);
                    if metric_client.export(points(seq)).await.is_err() {
                        return sent;
                    }
                    acked.lock().unwrap().points.insert(seq);
                }
            })
        };
        // Let ingest and several flushes run, then kill while the sender is mid-stream.
        let before = acked.lock().unwrap().spans.len();
        let target = before + 300 + 200 * round as usize;
        for _ in 0..60_000 {
            if acked.lock().unwrap().spans.len() >= target || sender.is_finished() {
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
    let sql = |query: &'static str| {
        let http = process.http.clone();
        async move { http_sql(&http, query).await.unwrap() }
    };
    let spans = ids(&sql("SELECT id_hex(trace_id), id_hex(span_id) FROM spans").await);
    let log_seqs = seqs(&sql("SELECT attrs_int['seq'] FROM logs").await);
    let point_seqs = seqs(&sql("SELECT attrs_int['seq'] FROM metrics").await);
    let acked = acked.lock().unwrap();
    exactly_once("spans", &acked.spans, spans);
    exactly_once("log records", &acked.logs, log_seqs);
    exactly_once("metric points", &acked.points, point_seqs);
    assert!(sent_total >= 5, "each round sends until killed");
    for signal in ["traces", "logs", "metrics"] {
        let blocks = std::fs::read_dir(
            data.path()
                .join(format!("blocks/single-tenant/{signal}/shard-0")),
        )
        .unwrap()
        .count();
        assert!(blocks > 0, "{signal} blocks were flushed between the kills");
    }
    let mut process = process;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}
