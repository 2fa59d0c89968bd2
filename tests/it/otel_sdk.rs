//! End to end with a client spanlake did not write: the OpenTelemetry Python SDK's OTLP
//! exporters (gRPC and HTTP) send to a real server; right after the exporter's
//! acknowledgement, with no flush and no waiting, the Tempo API finds the trace by id and by
//! TraceQL search, and `spanlake sql` (over Flight SQL) sees exactly those spans with their attribute types
//! intact.

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
