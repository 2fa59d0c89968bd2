//! End to end with a client spanlake did not write: the OpenTelemetry Python SDK's OTLP
//! exporters (gRPC and HTTP) send to a real server; right after the exporter's
//! acknowledgement, with no flush and no waiting, the Tempo API finds the trace by id and by
//! TraceQL search, and `spanlake sql` (over Flight SQL) sees exactly those spans with their
//! attribute types intact. The SDK's log and metric exporters likewise: every record and point
//! arrives with its types, trace context, buckets and exemplars.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{TestServer, python};

fn spanlake_sql(server: &TestServer, query: &str) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_spanlake"))
        .args([
            "sql",
            "--format",
            "json",
            "--server",
            &format!("grpc://{}", server.server.flight_addr),
            query,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "spanlake sql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn exported_spans_arrive_with_types(protocol: &'static str) {
    let server = TestServer::start().await;
    let endpoint = match protocol {
        "grpc" => server.otlp_grpc_url(),
        _ => format!("http://{}", server.server.otlp_http_addr),
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/export_spans.py");
    let mut exporter = Command::new(python());
    exporter.arg(script).arg(protocol).arg(endpoint);
    let stdout = crate::common::run_to_success(exporter).await;
    let ids: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let trace_id = ids["trace_id"].as_str().unwrap();
    found_through_tempo_api(&server, protocol, trace_id, &ids).await;

    let rows = spanlake_sql(
        &server,
        &format!(
            "SELECT span_id, parent_span_id, name, kind, status_code, status_message, service_name, scope_name, \
             span_attrs_int['http.response.status_code'] AS status_int, span_attrs_str['code.as_string'] AS status_str, \
             span_attrs_float['ratio'] AS ratio, span_attrs_bool['cached'] AS cached, span_attrs_json['tags'] AS tags, \
             http_method, http_status_code, db_system, deployment_environment, cardinality(events) AS events \
             FROM spans WHERE trace_id = to_trace_id('{trace_id}') ORDER BY name"
        ),
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (parent, child) = (&rows[0], &rows[1]);
    assert_eq!(parent["span_id"], ids["parent"]);
    assert_eq!(parent["name"], "GET /orders");
    assert_eq!(parent["kind"], "server");
    assert_eq!(parent["service_name"], format!("py-{protocol}"));
    assert_eq!(parent["scope_name"], "spanlake-e2e");
    assert_eq!(parent["status_int"], 500);
    assert_eq!(parent["status_str"], "500");
    assert_eq!(parent["ratio"], 0.25);
    assert_eq!(parent["cached"], true);
    assert_eq!(parent["tags"], r#"["a","b"]"#);
    assert_eq!(parent["http_method"], "GET");
    assert_eq!(parent["http_status_code"], 500);
    assert_eq!(parent["deployment_environment"], "test");
    assert_eq!(child["span_id"], ids["child"]);
    assert_eq!(child["parent_span_id"], ids["parent"]);
    assert_eq!(child["kind"], "client");
    assert_eq!(child["status_code"], "error");
    assert_eq!(child["status_message"], "timeout");
    assert_eq!(child["db_system"], "postgresql");
    assert_eq!(child["events"], 1);
}

/// Read-your-writes through the Tempo API: by id and by TraceQL search, at once.
async fn found_through_tempo_api(
    server: &TestServer,
    protocol: &str,
    trace_id: &str,
    ids: &serde_json::Value,
) {
    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .get(format!("{}/api/v2/traces/{trace_id}", server.http_url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let spans = &body["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans.as_array().map(Vec::len), Some(2), "{body}");

    let query = format!(r#"{{ resource.service.name = "py-{protocol}" && kind = server }}"#);
    let body: serde_json::Value = http
        .get(format!("{}/api/search", server.http_url()))
        .query(&[("q", query.as_str())])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    let trace = &body["traces"][0];
    assert_eq!(
        trace["traceID"].as_str(),
        Some(trace_id.trim_start_matches('0')),
        "{body}"
    );
    assert_eq!(trace["rootServiceName"], format!("py-{protocol}"));
    assert_eq!(trace["spanSets"][0]["spans"][0]["spanID"], ids["parent"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_grpc_exporter_spans_arrive_with_types() {
    exported_spans_arrive_with_types("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_http_exporter_spans_arrive_with_types() {
    exported_spans_arrive_with_types("http").await;
}

/// The Python SDK's log and metric exporters: every record and point is found with its types,
/// ids and buckets intact.
async fn exported_logs_and_metrics_arrive_with_types(protocol: &'static str) {
    let server = TestServer::start().await;
    let endpoint = match protocol {
        "grpc" => server.otlp_grpc_url(),
        _ => format!("http://{}", server.server.otlp_http_addr),
    };
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/export_logs_metrics.py");
    let mut exporter = Command::new(python());
    exporter.arg(script).arg(protocol).arg(endpoint);
    let stdout = crate::common::run_to_success(exporter).await;
    let sent: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let service = sent["service"].as_str().unwrap();

    let logs = spanlake_sql(
        &server,
        "SELECT severity_number, severity_text, body, id_hex(trace_id) AS trace_id, \
         id_hex(span_id) AS span_id, service_name, scope_name, attrs_int['order.id'] AS order_id, \
         attrs_float['ratio'] AS ratio, attrs_bool['cached'] AS cached, attrs_str['user'] AS user \
         FROM logs ORDER BY severity_number",
    );
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 3, "{logs:?}");
    let (info, warn, error) = (&logs[0], &logs[1], &logs[2]);
    assert_eq!(info["severity_number"], 9);
    assert_eq!(info["body"], "order 42 placed");
    assert_eq!(info["trace_id"], sent["trace_id"]);
    assert_eq!(info["span_id"], sent["span_id"]);
    assert_eq!(info["service_name"], service);
    assert_eq!(info["scope_name"], "spanlake-e2e");
    assert_eq!(info["order_id"], 42);
    assert_eq!(info["ratio"], 0.5);
    assert_eq!(info["cached"], true);
    assert_eq!(info["user"], "ada");
    assert_eq!(warn["severity_number"], 13);
    assert!(warn["trace_id"].is_null(), "{warn}");
    assert_eq!(error["severity_text"], "ERROR");
    let body: serde_json::Value = serde_json::from_str(error["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"error": "timeout", "retries": 3}));

    let points = spanlake_sql(
        &server,
        "SELECT metric_name, metric_type, value, value_int, is_monotonic, aggregation_temporality, \
         bucket_counts, explicit_bounds, count, sum, min, max, cardinality(exemplars) AS exemplars \
         FROM metrics ORDER BY metric_name",
    );
    let points = points.as_array().unwrap();
    let by_name = |name: &str| {
        points
            .iter()
            .find(|p| p["metric_name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {points:?}"))
    };
    let big = by_name("py.big");
    assert_eq!(
        big["value_int"], 9_007_199_254_740_993_i64,
        "2^53 + 1 stays exact"
    );
    let latency = by_name("py.latency");
    assert_eq!(latency["metric_type"], "histogram");
    assert_eq!(latency["bucket_counts"], serde_json::json!([1, 2, 1, 1]));
    assert_eq!(
        latency["explicit_bounds"],
        serde_json::json!([1.0, 5.0, 10.0])
    );
    assert_eq!(latency["count"], 5);
    assert_eq!(latency["sum"], 33.5);
    assert_eq!(latency["min"], 0.5);
    assert_eq!(latency["max"], 20.0);
    assert_eq!(latency["aggregation_temporality"], "cumulative");
    assert!(latency["exemplars"].as_i64().unwrap() > 0);
    let requests = by_name("py.requests");
    assert_eq!(requests["metric_type"], "sum");
    assert_eq!(requests["value_int"], 7);
    assert_eq!(requests["is_monotonic"], true);
    let temperature = by_name("py.temperature");
    assert_eq!(temperature["metric_type"], "gauge");
    assert_eq!(temperature["value"], 21.5);
    assert!(temperature["value_int"].is_null());

    let exemplar_spans = spanlake_sql(
        &server,
        "SELECT DISTINCT id_hex(e['span_id']) AS span_id FROM \
         (SELECT unnest(exemplars) AS e FROM metrics WHERE metric_name = 'py.latency')",
    );
    assert_eq!(
        exemplar_spans,
        serde_json::json!([{ "span_id": sent["span_id"] }]),
        "the histogram's exemplars point at the span they were recorded in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_grpc_log_and_metric_exporters_arrive_with_types() {
    exported_logs_and_metrics_arrive_with_types("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_http_log_and_metric_exporters_arrive_with_types() {
    exported_logs_and_metrics_arrive_with_types("http").await;
}
