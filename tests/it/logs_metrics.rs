//! Logs and metrics end to end: OTLP gRPC and HTTP exports land in the `logs` and `metrics`
//! tables with their types intact, survive a flush and a restart exactly once, bad exports get
//! clear refusals with nothing stored, and a trace comes back with its logs and exemplars.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use spanlake::generator::Generator;

use crate::common::TestServer;

const T0: u64 = 1_700_000_000_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv(
            "service.name",
            any_value::Value::StringValue(service.into()),
        )],
        ..Default::default()
    })
}

/// One log record per `(trace_id, span_id)` pair, with typed attributes and a structured body
/// on the second.
fn logs_request(service: &str, ids: &[(Vec<u8>, Vec<u8>)]) -> ExportLogsServiceRequest {
    let records = ids
        .iter()
        .enumerate()
        .map(|(i, (trace_id, span_id))| LogRecord {
            time_unix_nano: T0 + i as u64 * 1_000,
            observed_time_unix_nano: T0 + i as u64 * 1_000 + 5,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(if i == 1 {
                    any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv("retries", any_value::Value::IntValue(3))],
                    })
                } else {
                    any_value::Value::StringValue(format!("record {i}"))
                }),
            }),
            attributes: vec![
                kv("seq", any_value::Value::IntValue(i as i64)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
            ],
            trace_id: trace_id.clone(),
            span_id: span_id.clone(),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(data),
        ..Default::default()
    }
}

/// An integer counter, a gauge and a histogram whose point carries an exemplar of `exemplar`.
fn metrics_request(service: &str, exemplar: (Vec<u8>, Vec<u8>)) -> ExportMetricsServiceRequest {
    let counter = metric(
        "requests",
        metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: T0,
                time_unix_nano: T0 + 10,
                value: Some(number_data_point::Value::AsInt(9_007_199_254_740_993)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
    );
    let gauge = metric(
        "temperature",
        metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: T0 + 10,
                value: Some(number_data_point::Value::AsDouble(21.5)),
                ..Default::default()
            }],
        }),
    );
    let histogram = metric(
        "latency",
        metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: T0,
                time_unix_nano: T0 + 10,
                count: 5,
                sum: Some(33.5),
                min: Some(0.5),
                max: Some(20.0),
                explicit_bounds: vec![1.0, 5.0, 10.0],
                bucket_counts: vec![1, 2, 1, 1],
                exemplars: vec![Exemplar {
                    time_unix_nano: T0 + 5,
                    value: Some(exemplar::Value::AsDouble(20.0)),
                    trace_id: exemplar.0,
                    span_id: exemplar.1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    );
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter, gauge, histogram],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(server: &TestServer, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    post_as(server, path, content_type, body, None).await
}

async fn post_as(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    tenant: Option<&str>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", server.server.otlp_http_addr))
        .header("content-type", content_type)
        .body(body);
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn ids(n: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    (1..=n).map(|i| (vec![i; 16], vec![i; 8])).collect()
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(column), &arrow::datatypes::DataType::Utf8)
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..c.len())
                .map(move |i| (!c.is_null(i)).then(|| c.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn logs_over_grpc_keep_ids_types_and_structured_bodies() {
    let server = TestServer::start().await;
    let mut client = LogsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    client
        .export(logs_request("api", &ids(3)))
        .await
        .expect("the export is acknowledged");
    let batches = server
        .sql(
            "SELECT body, id_hex(trace_id), attrs_int['seq'], attrs_float['ratio'], service_name, \
             severity_text, CAST(observed_time AS BIGINT) - CAST(time AS BIGINT) \
             FROM logs ORDER BY time",
        )
        .await;
    let bodies = strings(&batches, 0);
    assert_eq!(
        bodies,
        vec![
            Some("record 0".to_string()),
            Some(r#"{"retries":3}"#.to_string()),
            Some("record 2".to_string())
        ]
    );
    assert_eq!(
        strings(&batches, 1)[0].as_deref(),
        Some("01".repeat(16).as_str())
    );
    let batch = &batches[0];
    assert_eq!(batch.column(2).as_primitive::<Int64Type>().value(1), 1);
    assert_eq!(batch.column(3).as_primitive::<Float64Type>().value(0), 0.5);
    assert_eq!(strings(&batches, 4)[0].as_deref(), Some("api"));
    assert_eq!(strings(&batches, 5)[0].as_deref(), Some("INFO"));
    assert_eq!(batch.column(6).as_primitive::<Int64Type>().value(0), 5);
}

#[tokio::test]
async fn gzipped_json_logs_are_read_through_sql_over_http() {
    use std::io::Write;
    let server = TestServer::start().await;
    let json = serde_json::to_vec(&logs_request("api", &ids(2))).unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&json).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", server.server.otlp_http_addr))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let batches = crate::common::http_sql(
        &server.http_url(),
        "SELECT count(*) FROM logs WHERE service_name = 'api' AND span_id IS NOT NULL",
    )
    .await
    .unwrap();
    assert_eq!(crate::common::single_i64(&batches), 2);
}

#[tokio::test]
async fn metrics_over_http_json_keep_integers_and_buckets_exact() {
    let server = TestServer::start().await;
    let request = metrics_request("api", (vec![7; 16], vec![7; 8]));
    let json = serde_json::to_vec(&request).unwrap();
    let (status, body) = post(&server, "/v1/metrics", "application/json", json).await;
    assert_eq!(status, 200, "{body}");
    let batches = server
        .sql(
            "SELECT metric_name, metric_type, value_int, value, aggregation_temporality, \
             is_monotonic, bucket_counts, explicit_bounds, count, sum, cardinality(exemplars) \
             FROM metrics ORDER BY metric_name",
        )
        .await;
    let names = strings(&batches, 0);
    assert_eq!(
        names,
        vec![
            Some("latency".to_string()),
            Some("requests".to_string()),
            Some("temperature".to_string())
        ]
    );
    let batch = &batches[0];
    assert_eq!(
        strings(&batches, 1),
        vec![
            Some("histogram".to_string()),
            Some("sum".to_string()),
            Some("gauge".to_string())
        ]
    );
    let value_int = batch.column(2).as_primitive::<Int64Type>();
    assert_eq!(
        value_int.value(1),
        9_007_199_254_740_993,
        "2^53 + 1 stays exact"
    );
    assert!(value_int.is_null(2), "a float gauge has no integer value");
    assert_eq!(batch.column(3).as_primitive::<Float64Type>().value(2), 21.5);
    assert_eq!(strings(&batches, 4)[1].as_deref(), Some("cumulative"));
    assert!(batch.column(5).as_boolean().value(1));
    let buckets = batch.column(6).as_list::<i32>().value(0);
    assert_eq!(
        buckets.as_primitive::<UInt64Type>().values().to_vec(),
        vec![1, 2, 1, 1]
    );
    let bounds = batch.column(7).as_list::<i32>().value(0);
    assert_eq!(
        bounds.as_primitive::<Float64Type>().values().to_vec(),
        vec![1.0, 5.0, 10.0]
    );
    assert_eq!(batch.column(8).as_primitive::<UInt64Type>().value(0), 5);
    assert_eq!(batch.column(9).as_primitive::<Float64Type>().value(0), 33.5);
    assert_eq!(batch.column(10).as_primitive::<UInt64Type>().value(0), 1);
}

#[tokio::test]
async fn flushed_logs_and_metrics_are_read_once_from_blocks_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::test_config(dir.path());
    let server = spanlake::server::Server::start(config.clone(), false)
        .await
        .unwrap();
    let receiver_url = format!("http://{}", server.otlp_http_addr);
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/v1/logs", logs_request("api", &ids(4)).encode_to_vec()),
        (
            "/v1/metrics",
            metrics_request("api", (vec![1; 16], vec![1; 8])).encode_to_vec(),
        ),
    ] {
        let response = client
            .post(format!("{receiver_url}{path}"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    server.ingester.flush(true).await.unwrap();
    let blocks = |signal: &str| {
        std::fs::read_dir(
            dir.path()
                .join(format!("blocks/single-tenant/{signal}/shard-0")),
        )
        .map(|d| d.count())
        .unwrap_or(0)
    };
    assert!(blocks("logs") > 0, "a logs block was written");
    assert!(blocks("metrics") > 0, "a metrics block was written");
    let tenant = spanlake::tenant::SINGLE_TENANT;
    let count = |engine: spanlake::query::QueryEngine, table: &'static str| async move {
        crate::common::single_i64(
            &engine
                .sql(tenant, &format!("SELECT count(*) FROM {table}"))
                .await
                .unwrap()
                .1,
        )
    };
    assert_eq!(count(server.engine.clone(), "logs").await, 4);
    assert_eq!(count(server.engine.clone(), "metrics").await, 3);
    server.shutdown().await;
    let server = spanlake::server::Server::start(config, false)
        .await
        .unwrap();
    assert_eq!(count(server.engine.clone(), "logs").await, 4);
    assert_eq!(count(server.engine.clone(), "metrics").await, 3);
    let pruned = server
        .engine
        .sql(
            tenant,
            "SELECT count(*) FROM metrics WHERE metric_name = 'latency'",
        )
        .await
        .unwrap()
        .1;
    assert_eq!(crate::common::single_i64(&pruned), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_log_and_metric_exports_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(|c| c.max_request_bytes = 64 << 10).await;
    let mut bad_id = logs_request("api", &ids(1));
    bad_id.resource_logs[0].scope_logs[0].log_records[0].trace_id = vec![1, 2, 3];
    let (status, body) = post(
        &server,
        "/v1/logs",
        "application/x-protobuf",
        bad_id.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("trace_id"), "{body}");

    let mut bad_histogram = metrics_request("api", (vec![], vec![]));
    if let Some(metric::Data::Histogram(h)) =
        &mut bad_histogram.resource_metrics[0].scope_metrics[0].metrics[2].data
    {
        h.data_points[0].bucket_counts = vec![1, 2];
    }
    let mut client = MetricsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let status = client.export(bad_histogram).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("bucket"), "{status:?}");

    let (status, _) = post(
        &server,
        "/v1/logs",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(&server, "/v1/metrics", "text/plain", b"x".to_vec()).await;
    assert_eq!(status, 415);
    let huge = logs_request("api", &vec![(vec![1; 16], vec![1; 8]); 2000]);
    let (status, _) = post(
        &server,
        "/v1/logs",
        "application/x-protobuf",
        huge.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 413);

    assert_eq!(server.count("SELECT count(*) FROM logs").await, 0);
    assert_eq!(server.count("SELECT count(*) FROM metrics").await, 0);
    // Still serving.
    let (status, _) = post(
        &server,
        "/v1/logs",
        "application/x-protobuf",
        logs_request("api", &ids(1)).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn logs_and_metrics_need_a_tenant_and_stay_with_it() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    let body = logs_request("api", &ids(2)).encode_to_vec();
    let (status, _) = post(&server, "/v1/logs", "application/x-protobuf", body.clone()).await;
    assert_eq!(status, 401, "no tenant, no write");
    let mut client = MetricsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let refused = client
        .export(metrics_request("api", (vec![], vec![])))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let (status, _) = post_as(
        &server,
        "/v1/logs",
        "application/x-protobuf",
        body,
        Some("team-a"),
    )
    .await;
    assert_eq!(status, 200);
    let count = |tenant: &'static str| {
        let engine = server.server.engine.clone();
        async move {
            crate::common::single_i64(
                &engine
                    .sql(tenant, "SELECT count(*) FROM logs")
                    .await
                    .unwrap()
                    .1,
            )
        }
    };
    assert_eq!(count("team-a").await, 2);
    assert_eq!(count("team-b").await, 0);
}

#[tokio::test]
async fn a_tenant_at_its_live_limit_is_refused_with_429_before_anything_is_written() {
    let server = TestServer::start_with(|c| {
        c.ingester.max_live_bytes_per_tenant = 20_000;
        // Nothing is flushed during the test, so the live bytes stay held.
        c.ingester.max_block_age = std::time::Duration::from_secs(3600);
        c.ingester.max_block_bytes = 1 << 30;
    })
    .await;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..50 {
        let body = logs_request("api", &ids(4)).encode_to_vec();
        let (status, text) = post(&server, "/v1/logs", "application/x-protobuf", body).await;
        match status {
            200 => accepted += 1,
            _ => {
                refused = Some((status, text));
                break;
            }
        }
    }
    let (status, text) = refused.expect("the limit is reached");
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("limit"), "{text}");
    assert!(accepted > 0);
    assert_eq!(
        server.count("SELECT count(*) FROM logs").await,
        accepted * 4,
        "every acknowledged record is stored, the refused request is not"
    );
    let mut client = LogsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    let status = client
        .export(logs_request("api", &ids(4)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn a_trace_comes_back_with_its_logs_and_exemplars() {
    let server = TestServer::start().await;
    let trace = Generator::new(5).trace_at(T0 as i64);
    let spans: Vec<_> = trace
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .cloned()
        .collect();
    let trace_id = spans[0].trace_id.clone();
    let mut grpc = server.grpc_client().await;
    grpc.export(trace).await.unwrap();
    let pairs: Vec<_> = spans
        .iter()
        .take(2)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    let mut logs = LogsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    logs.export(logs_request("frontend", &pairs)).await.unwrap();
    let mut metrics = MetricsServiceClient::connect(server.otlp_grpc_url())
        .await
        .unwrap();
    metrics
        .export(metrics_request("frontend", pairs[0].clone()))
        .await
        .unwrap();

    let url = format!(
        "{}/api/v1/traces/{}/correlated",
        server.http_url(),
        hex::encode(&trace_id)
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["trace_id"], hex::encode(&trace_id));
    assert_eq!(body["spans"].as_array().unwrap().len(), spans.len());
    let logs = body["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0]["span_id"], hex::encode(&pairs[0].1));
    assert_eq!(logs[0]["body"], "record 0");
    let exemplars = body["exemplars"].as_array().unwrap();
    assert_eq!(exemplars.len(), 1, "{body}");
    assert_eq!(exemplars[0]["metric_name"], "latency");
    assert_eq!(exemplars[0]["value"], 20.0);

    let missing = reqwest::get(format!(
        "{}/api/v1/traces/{}/correlated",
        server.http_url(),
        "ab".repeat(16)
    ))
    .await
    .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let bad = reqwest::get(format!(
        "{}/api/v1/traces/xyz/correlated",
        server.http_url()
    ))
    .await
    .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
