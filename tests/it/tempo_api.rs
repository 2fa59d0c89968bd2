//! Tempo's HTTP API and tempopb gRPC services against a real server, on a fixed dataset sent
//! over OTLP/gRPC: trace A is flushed to a Parquet block, trace B stays live.
//!
//! ```text
//! A 000…0a1  resource {service.name: frontend, region: eu}, scope lib 1.0 {lib.flavor: fast}
//!   1 "GET /"   server error "boom", 100 ms   http.method = "GET", http.status_code = 500
//!   └─ 2 "SELECT" client, 30 ms              db.system = "pg", ratio = 0.5, cached = false
//!                                            event "retry" {attempt: 2}
//! B b2b2…b2  resource {service.name: payments}, no scope
//!   3 "POST /pay" server ok, 300 ms          http.status_code = 200
//! ```
//!
//! Expected JSON is written out by hand and compared as parsed JSON.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use serde_json::{Value as Json, json};
use spanlake::tempopb::streaming_querier_client::StreamingQuerierClient;
use spanlake::tempopb::{self, SearchRequest, SearchTagValuesRequest};

use crate::common::TestServer;

/// 2023-11-14T22:13:20Z.
const BASE_S: u64 = 1_700_000_000;
const BASE: u64 = BASE_S * 1_000_000_000;
const MS: u64 = 1_000_000;

const A: &str = "000000000000000000000000000000a1";
const B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(text: &str) -> Value {
    Value::StringValue(text.into())
}

fn span_id(n: u8) -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 0, n]
}

fn trace_a() -> ResourceSpans {
    let trace_id = hex::decode(A).unwrap();
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s("frontend")), kv("region", s("eu"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "lib".into(),
                version: "1.0".into(),
                attributes: vec![kv("lib.flavor", s("fast"))],
                ..Default::default()
            }),
            spans: vec![
                Span {
                    trace_id: trace_id.clone(),
                    span_id: span_id(1),
                    name: "GET /".into(),
                    kind: 2,
                    start_time_unix_nano: BASE,
                    end_time_unix_nano: BASE + 100 * MS,
                    attributes: vec![
                        kv("http.method", s("GET")),
                        kv("http.status_code", Value::IntValue(500)),
                    ],
                    status: Some(Status {
                        message: "boom".into(),
                        code: 2,
                    }),
                    ..Default::default()
                },
                Span {
                    trace_id,
                    span_id: span_id(2),
                    parent_span_id: span_id(1),
                    name: "SELECT".into(),
                    kind: 3,
                    start_time_unix_nano: BASE + 10 * MS,
                    end_time_unix_nano: BASE + 40 * MS,
                    attributes: vec![
                        kv("db.system", s("pg")),
                        kv("ratio", Value::DoubleValue(0.5)),
                        kv("cached", Value::BoolValue(false)),
                    ],
                    events: vec![span::Event {
                        time_unix_nano: BASE + 20 * MS,
                        name: "retry".into(),
                        attributes: vec![kv("attempt", Value::IntValue(2))],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn trace_b() -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s("payments"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: hex::decode(B).unwrap(),
                span_id: span_id(3),
                name: "POST /pay".into(),
                kind: 2,
                start_time_unix_nano: BASE + 1000 * MS,
                end_time_unix_nano: BASE + 1300 * MS,
                attributes: vec![kv("http.status_code", Value::IntValue(200))],
                status: Some(Status {
                    message: String::new(),
                    code: 1,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn export(server: &TestServer, tenant: Option<&str>, resource_spans: ResourceSpans) {
    let mut request = tonic::Request::new(ExportTraceServiceRequest {
        resource_spans: vec![resource_spans],
    });
    if let Some(t) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", t.parse().unwrap());
    }
    server.grpc_client().await.export(request).await.unwrap();
}

/// The fixed dataset: A in a block, B live.
async fn dataset() -> TestServer {
    let server = TestServer::start().await;
    export(&server, None, trace_a()).await;
    server.server.ingester.flush(true).await.unwrap();
    export(&server, None, trace_b()).await;
    server
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn get_with(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.http_url()));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn get(server: &TestServer, path: &str) -> Reply {
    get_with(server, path, &[]).await
}

fn window() -> String {
    format!("start={}&end={}", BASE_S - 60, BASE_S + 60)
}

fn trace_a_batches() -> Json {
    json!([{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "frontend"}},
            {"key": "region", "value": {"stringValue": "eu"}}
        ]},
        "scopeSpans": [{
            "scope": {"name": "lib", "version": "1.0", "attributes": [
                {"key": "lib.flavor", "value": {"stringValue": "fast"}}
            ]},
            "spans": [
                {
                    "traceId": "AAAAAAAAAAAAAAAAAAAAoQ==",
                    "spanId": "AAAAAAAAAAE=",
                    "name": "GET /",
                    "kind": "SPAN_KIND_SERVER",
                    "startTimeUnixNano": "1700000000000000000",
                    "endTimeUnixNano": "1700000000100000000",
                    "attributes": [
                        {"key": "http.method", "value": {"stringValue": "GET"}},
                        {"key": "http.status_code", "value": {"intValue": "500"}}
                    ],
                    "status": {"message": "boom", "code": "STATUS_CODE_ERROR"}
                },
                {
                    "traceId": "AAAAAAAAAAAAAAAAAAAAoQ==",
                    "spanId": "AAAAAAAAAAI=",
                    "parentSpanId": "AAAAAAAAAAE=",
                    "name": "SELECT",
                    "kind": "SPAN_KIND_CLIENT",
                    "startTimeUnixNano": "1700000000010000000",
                    "endTimeUnixNano": "1700000000040000000",
                    "attributes": [
                        {"key": "db.system", "value": {"stringValue": "pg"}},
                        {"key": "ratio", "value": {"doubleValue": 0.5}},
                        {"key": "cached", "value": {"boolValue": false}}
                    ],
                    "events": [{
                        "timeUnixNano": "1700000000020000000",
                        "name": "retry",
                        "attributes": [{"key": "attempt", "value": {"intValue": "2"}}]
                    }],
                    "status": {}
                }
            ]
        }]
    }])
}

fn trace_b_batches() -> Json {
    json!([{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "payments"}}
        ]},
        "scopeSpans": [{
            "scope": {},
            "spans": [{
                "traceId": "srKysrKysrKysrKysrKysg==",
                "spanId": "AAAAAAAAAAM=",
                "name": "POST /pay",
                "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": "1700000001000000000",
                "endTimeUnixNano": "1700000001300000000",
                "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
                "status": {"code": "STATUS_CODE_OK"}
            }]
        }]
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_by_id_v1_and_v2_json() {
    let server = dataset().await;

    let reply = get(&server, &format!("/api/traces/{A}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.json(), json!({"batches": trace_a_batches()}));
    // Leading zeros may be left out, and case does not matter.
    let reply = get(&server, "/api/traces/A1").await;
    assert_eq!(reply.json(), json!({"batches": trace_a_batches()}));
    let reply = get(&server, &format!("/api/traces/{B}")).await;
    assert_eq!(reply.json(), json!({"batches": trace_b_batches()}));

    let reply = get(&server, &format!("/api/v2/traces/{A}?{}", window())).await;
    assert_eq!(
        reply.json(),
        json!({"trace": {"resourceSpans": trace_a_batches()}, "metrics": {}})
    );

    // Absent: v1 404 with an empty body, v2 200 with an empty trace.
    let reply = get(&server, "/api/traces/c0ffee").await;
    assert_eq!((reply.status, reply.body.len()), (404, 0));
    let reply = get(&server, "/api/v2/traces/c0ffee").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"trace": {}, "metrics": {}}));
    // Outside the window counts as absent.
    let reply = get(&server, &format!("/api/traces/{A}?start=10&end=20")).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_by_id_errors() {
    let server = dataset().await;
    for (path, message) in [
        (
            "/api/traces/12x4".to_string(),
            "trace IDs can only contain hex characters: invalid character 'x' at position 3",
        ),
        (
            format!("/api/v2/traces/{}", "f".repeat(33)),
            "trace IDs can't be larger than 128 bits",
        ),
        (
            format!("/api/traces/{A}?start=20&end=10"),
            "http parameter start must be before end. received start=20 end=10",
        ),
        (
            format!("/api/traces/{A}?mode=sideways"),
            "invalid value for mode sideways",
        ),
        (
            format!("/api/v2/traces/{A}?q=%7B%20%7D%20%3E%3E%20%7B%20%7D"),
            "invalid TraceQL query: { } >> { }: only a single spanset filter { ... } can filter a trace",
        ),
    ] {
        let reply = get(&server, &path).await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (400, message),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_by_id_v2_filters_spans_with_q() {
    let server = dataset().await;
    let q = "%7B%20span.db.system%20%3D%20%22pg%22%20%7D"; // { span.db.system = "pg" }
    let reply = get(&server, &format!("/api/v2/traces/{A}?q={q}")).await;
    let body = reply.json();
    let spans = &body["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(spans[0]["name"], "SELECT");
    // The ancestor path comes along with keep_hierarchy.
    let reply = get(
        &server,
        &format!("/api/v2/traces/{A}?q={q}&keep_hierarchy=true"),
    )
    .await;
    let body = reply.json();
    let spans = &body["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans.as_array().unwrap().len(), 2, "{body}");
    // Matching nothing gives an empty trace.
    let reply = get(
        &server,
        &format!("/api/v2/traces/{A}?q=%7B%20name%20%3D%20%22none%22%20%7D"),
    )
    .await;
    assert_eq!(reply.json(), json!({"trace": {}, "metrics": {}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_by_id_protobuf() {
    let server = dataset().await;
    let accept = [("accept", "application/protobuf")];
    let reply = get_with(&server, &format!("/api/traces/{A}"), &accept).await;
    assert_eq!(reply.headers["content-type"], "application/protobuf");
    let trace = tempopb::Trace::decode(reply.body.as_slice()).unwrap();
    assert_eq!(trace.resource_spans, vec![with_statuses(trace_a())]);

    let reply = get_with(&server, &format!("/api/v2/traces/{B}"), &accept).await;
    let response = tempopb::TraceByIdResponse::decode(reply.body.as_slice()).unwrap();
    // Sent without a scope, it comes back with an empty one, as from Tempo.
    let mut expected = trace_b();
    expected.scope_spans[0].scope = Some(InstrumentationScope::default());
    assert_eq!(response.trace.unwrap().resource_spans, vec![expected]);
    assert_eq!(response.status, 0);

    let reply = get_with(&server, "/api/v2/traces/c0ffee", &accept).await;
    let response = tempopb::TraceByIdResponse::decode(reply.body.as_slice()).unwrap();
    assert_eq!(response.trace, Some(tempopb::Trace::default()));
}

/// Trace A as it comes back: the same spans, each with a status.
fn with_statuses(mut rs: ResourceSpans) -> ResourceSpans {
    for span in &mut rs.scope_spans[0].spans {
        span.status.get_or_insert_with(Status::default);
    }
    rs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_larger_than_the_limit() {
    let server = TestServer::start_with(|c| c.query.max_bytes_per_trace = 200).await;
    export(&server, None, trace_a()).await;
    let reply = get(&server, &format!("/api/traces/{A}")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (422, "trace exceeds max size (max bytes: 200)")
    );
    let reply = get(&server, &format!("/api/v2/traces/{A}")).await;
    let body = reply.json();
    assert_eq!(body["status"], "PARTIAL");
    assert_eq!(
        body["message"],
        "Trace exceeds maximum size of 200 bytes, a partial trace is returned"
    );
    let spans = &body["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans.as_array().unwrap().len(), 1, "{body}");
}

/// Removes `metrics.totalBlockBytes` after checking it is a positive u64 string.
fn without_block_bytes(mut body: Json) -> Json {
    let metrics = body["metrics"].as_object_mut().unwrap();
    if let Some(bytes) = metrics.remove("totalBlockBytes") {
        assert!(bytes.as_str().unwrap().parse::<u64>().unwrap() > 0);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_json() {
    let server = dataset().await;
    let q = "%7B%20span.http.status_code%20%3E%3D%20500%20%7D"; // { span.http.status_code >= 500 }
    let reply = get(&server, &format!("/api/search?q={q}&{}", window())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let span_set = json!({
        "spans": [{
            "spanID": "0000000000000001",
            "name": "GET /",
            "startTimeUnixNano": "1700000000000000000",
            "durationNanos": "100000000",
            "attributes": [{"key": "http.status_code", "value": {"intValue": "500"}}]
        }],
        "matched": 1
    });
    assert_eq!(
        without_block_bytes(reply.json()),
        json!({
            "traces": [{
                "traceID": "a1",
                "rootServiceName": "frontend",
                "rootTraceName": "GET /",
                "startTimeUnixNano": "1700000000000000000",
                "durationMs": 100,
                "spanSet": span_set,
                "spanSets": [span_set],
                "serviceStats": {"frontend": {"spanCount": 2, "errorCount": 1}}
            }],
            "metrics": {"totalBlocks": 1, "completedJobs": 1, "totalJobs": 1}
        })
    );

    // Newest first, limit and spss.
    let reply = get(
        &server,
        &format!("/api/search?q=%7B%7D&limit=5&spss=1&{}", window()),
    )
    .await;
    let body = reply.json();
    let ids: Vec<&str> = body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [B, "a1"]);
    assert_eq!(body["traces"][1]["spanSets"][0]["matched"], 2);
    assert_eq!(
        body["traces"][1]["spanSets"][0]["spans"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let reply = get(
        &server,
        &format!("/api/search?q=%7B%7D&limit=1&{}", window()),
    )
    .await;
    assert_eq!(reply.json()["traces"].as_array().unwrap().len(), 1);

    // Nothing found: an empty list, metrics present.
    let reply = get(
        &server,
        &format!(
            "/api/search?q=%7B%20name%20%3D%20%22none%22%20%7D&{}",
            window()
        ),
    )
    .await;
    let body = without_block_bytes(reply.json());
    assert_eq!(body["traces"], json!([]));
    assert_eq!(body["metrics"]["totalJobs"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_search() {
    let server = dataset().await;
    let reply = get(
        &server,
        &format!(
            "/api/search?tags=service.name%3Dfront%20region%3Deu&{}",
            window()
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        without_block_bytes(reply.json()),
        json!({
            "traces": [{
                "traceID": "a1",
                "rootServiceName": "frontend",
                "rootTraceName": "GET /",
                "startTimeUnixNano": "1700000000000000000",
                "durationMs": 100,
                "serviceStats": {"frontend": {"spanCount": 2, "errorCount": 1}}
            }],
            "metrics": {"totalBlocks": 1, "completedJobs": 1, "totalJobs": 1}
        })
    );
    let found = |query: &'static str| {
        let server = &server;
        async move {
            let body = get(server, &format!("/api/search?{query}&{}", window()))
                .await
                .json();
            body["traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["traceID"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found("tags=http.status_code%3D200").await, [B]);
    assert_eq!(found("tags=status.code%3Derror").await, ["a1"]);
    assert_eq!(found("minDuration=200ms").await, [B]);
    assert_eq!(found("maxDuration=150ms").await, ["a1"]);
    assert!(found("tags=region%3Dus").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_errors() {
    let server = dataset().await;
    let w = window();
    for (query, message) in [
        (
            format!("q=%7B%20.a%20%3C%20&{w}"),
            "invalid TraceQL query: ",
        ),
        (
            format!("q=%7B%7D&limit=0&{w}"),
            "invalid limit: must be a positive number",
        ),
        (
            format!("q=%7B%7D&limit=300000&{w}"),
            "limit 300000 exceeds max limit 262144",
        ),
        (
            format!("q=%7B%7D&spss=101&{w}"),
            "spss 101 exceeds max spans per span set 100",
        ),
        (
            format!("q=%7B%7D&tags=a%3Db&{w}"),
            "invalid request: can't specify tags and q in the same query",
        ),
        (
            "q=%7B%7D&start=20&end=10".to_string(),
            "http parameter start must be before end. received start=20 end=10",
        ),
        (
            "q=%7B%7D&start=20".to_string(),
            "error parsing date range: only one of start and end provided: must provide both or neither",
        ),
        (
            "q=%7B%7D&start=0&end=1000000".to_string(),
            "range specified by start and end exceeds 168h0m0s. received start=0 end=1000000",
        ),
        (format!("minDuration=fast&{w}"), "invalid minDuration: "),
        (
            format!("minDuration=2s&maxDuration=1s&{w}"),
            "invalid maxDuration: must be greater than minDuration",
        ),
        (format!("tags=a%3D%22open&{w}"), "invalid tags: "),
    ] {
        let reply = get(&server, &format!("/api/search?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        assert!(
            reply.text().starts_with(message),
            "{query}: {} does not start with {message}",
            reply.text()
        );
    }
    let reply = get(&server, &format!("/api/search?q=%7B%20.a%20%3C%20&{w}")).await;
    assert!(reply.text().contains("line 1, col"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_names_json() {
    let server = dataset().await;
    let w = window();
    let reply = get(&server, &format!("/api/search/tags?{w}")).await;
    assert_eq!(
        reply.json(),
        json!({
            "tagNames": ["attempt", "cached", "db.system", "http.method", "http.status_code",
                         "lib.flavor", "ratio", "region", "service.name"],
            "metrics": {}
        })
    );
    let reply = get(&server, &format!("/api/v2/search/tags?scope=resource&{w}")).await;
    assert_eq!(
        reply.json(),
        json!({"scopes": [{"name": "resource", "tags": ["region", "service.name"]}], "metrics": {}})
    );
    let reply = get(&server, &format!("/api/v2/search/tags?{w}")).await;
    let body = reply.json();
    let scopes: HashMap<&str, &Json> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), &s["tags"]))
        .collect();
    assert_eq!(
        scopes["span"],
        &json!([
            "cached",
            "db.system",
            "http.method",
            "http.status_code",
            "ratio"
        ])
    );
    assert_eq!(scopes["resource"], &json!(["region", "service.name"]));
    assert_eq!(scopes["event"], &json!(["attempt"]));
    assert_eq!(scopes["instrumentation"], &json!(["lib.flavor"]));
    assert!(
        scopes["intrinsic"]
            .as_array()
            .unwrap()
            .contains(&json!("status"))
    );
    let reply = get(&server, &format!("/api/v2/search/tags?scope=bogus&{w}")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (400, "invalid scope: bogus")
    );
    // Filtered by a query: only the attributes of matching spans.
    let reply = get(
        &server,
        &format!(
            "/api/v2/search/tags?scope=span&q=%7B%20name%20%3D%20%22POST%20%2Fpay%22%20%7D&{w}"
        ),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"scopes": [{"name": "span", "tags": ["http.status_code"]}], "metrics": {}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_values_json() {
    let server = dataset().await;
    let w = window();
    let reply = get(&server, &format!("/api/search/tag/service.name/values?{w}")).await;
    assert_eq!(
        reply.json(),
        json!({"tagValues": ["frontend", "payments"], "metrics": {}})
    );
    let reply = get(&server, &format!("/api/search/tag/nothing/values?{w}")).await;
    assert_eq!(reply.json(), json!({"tagValues": [], "metrics": {}}));

    let values = |path: String| {
        let server = &server;
        async move {
            let body = get(server, &path).await.json();
            let mut values: Vec<(String, String)> = body["tagValues"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .map(|v| {
                    (
                        v["type"].as_str().unwrap().to_string(),
                        v["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            values.sort();
            values
        }
    };
    let typed = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(t, v)| (t.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        values(format!(
            "/api/v2/search/tag/span.http.status_code/values?{w}"
        ))
        .await,
        typed(&[("int", "200"), ("int", "500")])
    );
    assert_eq!(
        values(format!(
            "/api/v2/search/tag/resource.service.name/values?{w}"
        ))
        .await,
        typed(&[("string", "frontend"), ("string", "payments")])
    );
    assert_eq!(
        values(format!("/api/v2/search/tag/status/values?{w}")).await,
        typed(&[
            ("keyword", "error"),
            ("keyword", "ok"),
            ("keyword", "unset")
        ])
    );
    assert_eq!(
        values(format!(
            "/api/v2/search/tag/resource.service.name/values?q=%7B%20status%20%3D%20error%20%7D&{w}"
        ))
        .await,
        typed(&[("string", "frontend")])
    );
    let reply = get(&server, &format!("/api/v2/search/tag/%7B%7D/values?{w}")).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_endpoints_and_gzip() {
    let server = dataset().await;
    let reply = get(&server, "/api/echo").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "echo\n"));
    let reply = get(&server, "/ready").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ready\n"));
    let reply = get(&server, "/api/status/buildinfo").await;
    let info = reply.json();
    for key in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(info[key].is_string(), "{key} in {info}");
    }

    let reply = get_with(
        &server,
        &format!("/api/traces/{A}"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(reply.headers["content-encoding"], "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(reply.body.as_slice()),
        &mut text,
    )
    .unwrap();
    let body: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(body, json!({"batches": trace_a_batches()}));
}

async fn streaming_client(
    addr: std::net::SocketAddr,
) -> StreamingQuerierClient<tonic::transport::Channel> {
    StreamingQuerierClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streaming_search_and_tag_values_on_both_ports() {
    let server = dataset().await;
    for addr in [server.server.grpc_addr, server.server.http_addr] {
        let mut client = streaming_client(addr).await;
        let mut stream = client
            .search(SearchRequest {
                query: "{ }".into(),
                start: (BASE_S - 60) as u32,
                end: (BASE_S + 60) as u32,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await.unwrap() {
            messages.push(message);
        }
        assert!(!messages.is_empty());
        assert!(messages.iter().all(|m| m.metrics.is_some()));
        let last = messages.last().unwrap();
        let ids: Vec<&str> = last.traces.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(ids, [B, "a1"], "{addr}");
        let metrics = last.metrics.unwrap();
        assert_eq!(metrics.completed_jobs, metrics.total_jobs);

        let mut stream = client
            .search_tag_values_v2(SearchTagValuesRequest {
                tag_name: "resource.service.name".into(),
                start: (BASE_S - 60) as u32,
                end: (BASE_S + 60) as u32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let message = stream.message().await.unwrap().unwrap();
        let mut values: Vec<String> = message.tag_values.into_iter().map(|v| v.value).collect();
        values.sort();
        assert_eq!(values, ["frontend", "payments"]);
        assert!(stream.message().await.unwrap().is_none());

        // A bad query is INVALID_ARGUMENT, not a broken stream.
        let status = client
            .search(SearchRequest {
                query: "{ .a < ".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_shows_another_tenants_data() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    export(&server, Some("tenant-a"), trace_a()).await;
    server.server.ingester.flush(true).await.unwrap();
    export(&server, Some("tenant-b"), trace_b()).await;
    let w = window();
    let as_tenant = |tenant: &'static str, path: String| {
        let server = &server;
        async move { get_with(server, &path, &[("x-scope-orgid", tenant)]).await }
    };

    let reply = get(&server, &format!("/api/traces/{A}")).await;
    assert_eq!((reply.status, reply.text().as_str()), (401, "no org id\n"));
    assert_eq!(
        as_tenant("tenant-a", format!("/api/traces/{A}"))
            .await
            .status,
        200
    );
    assert_eq!(
        as_tenant("tenant-b", format!("/api/traces/{A}"))
            .await
            .status,
        404
    );
    assert_eq!(
        as_tenant("tenant-a", format!("/api/traces/{B}"))
            .await
            .status,
        404
    );
    let reply = as_tenant("tenant-b", format!("/api/v2/traces/{A}")).await;
    assert_eq!(reply.json(), json!({"trace": {}, "metrics": {}}));

    let search = |tenant: &'static str| as_tenant(tenant, format!("/api/search?q=%7B%7D&{w}"));
    let ids = |body: Json| -> Vec<String> {
        body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(search("tenant-a").await.json()), ["a1"]);
    assert_eq!(ids(search("tenant-b").await.json()), [B]);
    // Several tenants at once combine.
    assert_eq!(ids(search("tenant-a|tenant-b").await.json()), [B, "a1"]);

    let tags = as_tenant("tenant-b", format!("/api/search/tags?{w}"))
        .await
        .json();
    assert_eq!(
        tags["tagNames"],
        json!(["http.status_code", "service.name"])
    );
    let values = as_tenant(
        "tenant-b",
        format!("/api/search/tag/service.name/values?{w}"),
    )
    .await
    .json();
    assert_eq!(values["tagValues"], json!(["payments"]));

    // gRPC: the org id travels as metadata.
    let mut client = streaming_client(server.server.grpc_addr).await;
    let mut request = tonic::Request::new(SearchRequest {
        query: "{ }".into(),
        start: (BASE_S - 60) as u32,
        end: (BASE_S + 60) as u32,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-scope-orgid", "tenant-b".parse().unwrap());
    let mut stream = client.search(request).await.unwrap().into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await.unwrap() {
        last = Some(message);
    }
    let ids: Vec<String> = last
        .unwrap()
        .traces
        .into_iter()
        .map(|t| t.trace_id)
        .collect();
    assert_eq!(ids, [B]);
    let mut request = tonic::Request::new(SearchTagValuesRequest {
        tag_name: "resource.service.name".into(),
        start: (BASE_S - 60) as u32,
        end: (BASE_S + 60) as u32,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-scope-orgid", "tenant-a".parse().unwrap());
    let message = client
        .search_tag_values_v2(request)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let values: Vec<String> = message.tag_values.into_iter().map(|v| v.value).collect();
    assert_eq!(values, ["frontend"]);
    let status = client
        .search(SearchRequest {
            query: "{ }".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_protobuf_round_trip() {
    let server = dataset().await;
    let reply = get_with(
        &server,
        &format!("/api/search?q=%7B%7D&{}", window()),
        &[("accept", "application/protobuf")],
    )
    .await;
    assert_eq!(reply.headers["content-type"], "application/protobuf");
    let response = tempopb::SearchResponse::decode(reply.body.as_slice()).unwrap();
    let ids: Vec<&str> = response
        .traces
        .iter()
        .map(|t| t.trace_id.as_str())
        .collect();
    assert_eq!(ids, [B, "a1"]);
    let a = &response.traces[1];
    assert_eq!(a.start_time_unix_nano, BASE);
    assert_eq!(a.span_sets[0].matched, 2);
    assert_eq!(a.span_set, Some(a.span_sets[0].clone()));
    assert_eq!(a.service_stats["frontend"].error_count, 1);

    let reply = get_with(
        &server,
        &format!("/api/v2/search/tags?{}", window()),
        &[("accept", "application/protobuf")],
    )
    .await;
    let response = tempopb::SearchTagsV2Response::decode(reply.body.as_slice()).unwrap();
    assert!(
        response
            .scopes
            .iter()
            .any(|s| s.name == "resource" && s.tags == ["region", "service.name"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_query_timeout_are_cancelled() {
    // A deadline of one nanosecond has passed before any query can answer.
    let server =
        TestServer::start_with(|c| c.query.timeout = std::time::Duration::from_nanos(1)).await;
    export(&server, None, trace_a()).await;
    let reply = get(&server, &format!("/api/search?q=%7B%7D&{}", window())).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (504, "context deadline exceeded")
    );
    let mut client = streaming_client(server.server.grpc_addr).await;
    let mut stream = client
        .search(SearchRequest {
            query: "{ }".into(),
            start: (BASE_S - 60) as u32,
            end: (BASE_S + 60) as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the deadline error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_command_prints_tempo_search_json() {
    let server = dataset().await;
    let data_dir = server.dir.path().to_path_buf();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command
        .args(["traceql", "{ status = error }", "--data-dir"])
        .arg(data_dir);
    let stdout = crate::common::run_to_success(command).await;
    let body: Json = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(body["traces"][0]["traceID"], "a1");
    assert_eq!(
        body["traces"][0]["startTimeUnixNano"],
        "1700000000000000000"
    );
    assert_eq!(body["traces"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_querier_finds_traces_and_searches() {
    use spanlake::tempopb::querier_client::QuerierClient;
    let server = dataset().await;
    let mut client = QuerierClient::connect(format!("http://{}", server.server.grpc_addr))
        .await
        .unwrap();
    let found = client
        .find_trace_by_id(tempopb::TraceByIdRequest {
            trace_id: hex::decode(B).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let spans = &found.trace.unwrap().resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans[0].name, "POST /pay");
    // Shorter ids are left-padded, as over HTTP.
    let absent = client
        .find_trace_by_id(tempopb::TraceByIdRequest {
            trace_id: vec![0xc0, 0xff, 0xee],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(absent.trace, Some(tempopb::Trace::default()));
    let status = client
        .find_trace_by_id(tempopb::TraceByIdRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let recent = client
        .search_recent(SearchRequest {
            query: "{ status = ok }".into(),
            start: (BASE_S - 60) as u32,
            end: (BASE_S + 60) as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = recent.traces.iter().map(|t| t.trace_id.as_str()).collect();
    assert_eq!(ids, [B]);
}

/// The status and message of a failed gRPC call.
fn grpc_error<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (tonic::Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_read_the_same_over_http_and_grpc() {
    use spanlake::tempopb::querier_client::QuerierClient;
    let server = dataset().await;
    let mut streaming = streaming_client(server.server.grpc_addr).await;
    let mut querier = QuerierClient::connect(format!("http://{}", server.server.grpc_addr))
        .await
        .unwrap();

    // A bad TraceQL query.
    let http = get(
        &server,
        &format!("/api/search?q=%7B%20.a%20%3C%20&{}", window()),
    )
    .await;
    let grpc = grpc_error(
        streaming
            .search(SearchRequest {
                query: "{ .a < ".into(),
                start: (BASE_S - 60) as u32,
                end: (BASE_S + 60) as u32,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(http.status, 400);
    assert_eq!(grpc, (tonic::Code::InvalidArgument, http.text()));
    // Said once: no second "invalid TraceQL" wrapped around the parser's message.
    assert!(
        http.text()
            .starts_with("invalid TraceQL query: parse error at line 1, col "),
        "{}",
        http.text()
    );
    assert_eq!(http.text().matches("TraceQL").count(), 1, "{}", http.text());

    // A bad time range, on search and on tag requests.
    let http = get(&server, "/api/search?q=%7B%7D&start=20&end=10").await;
    let grpc = grpc_error(
        querier
            .search_recent(SearchRequest {
                query: "{}".into(),
                start: 20,
                end: 10,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(
        (http.status, http.text().as_str()),
        (
            400,
            "http parameter start must be before end. received start=20 end=10"
        )
    );
    assert_eq!(grpc, (tonic::Code::InvalidArgument, http.text()));
    let http = get(&server, "/api/v2/search/tags?start=20&end=10").await;
    let grpc = grpc_error(
        querier
            .search_tags_v2(tempopb::SearchTagsRequest {
                start: 20,
                end: 10,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(http.status, 400);
    assert_eq!(grpc, (tonic::Code::InvalidArgument, http.text()));

    // An unknown trace: v2 over HTTP and FindTraceByID over gRPC give the same empty answer.
    let unknown = "0123456789abcdef0123456789abcdef";
    let http = get_with(
        &server,
        &format!("/api/v2/traces/{unknown}"),
        &[("Accept", "application/protobuf")],
    )
    .await;
    assert_eq!(http.status, 200);
    let over_http = tempopb::TraceByIdResponse::decode(http.body.as_slice()).unwrap();
    let over_grpc = querier
        .find_trace_by_id(tempopb::TraceByIdRequest {
            trace_id: hex::decode(unknown).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(over_http, over_grpc);
    assert_eq!(over_grpc.trace, Some(tempopb::Trace::default()));
    let v1 = get(&server, &format!("/api/traces/{unknown}")).await;
    assert_eq!((v1.status, v1.text().as_str()), (404, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_explain_answers_the_plan_the_search_runs() {
    let server = dataset().await;
    // Both plans below list the same blocks only if no flush falls between them.
    server.server.ingester.flush(true).await.unwrap();
    let query = r#"{ resource.service.name = "frontend" }"#;
    let reply = get(
        &server,
        &format!(
            "/api/search?q={}&limit=5&explain=true&{}",
            query.replace(' ', "%20").replace('"', "%22"),
            window()
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request = spanlake::query::search::SearchRequest {
        query: query.to_string(),
        range: spanlake::time::TimeRange::from_seconds(Some(BASE_S - 60), Some(BASE_S + 60)),
        limit: 5,
        spss: 0,
    };
    let plan = spanlake::query::search::explain(
        &server.server.engine,
        spanlake::tenant::SINGLE_TENANT,
        &request,
        false,
    )
    .await
    .unwrap();
    assert_eq!(reply.text(), plan);
    assert!(
        plan.contains("logical_plan") && plan.contains("physical_plan"),
        "{plan}"
    );
    assert!(plan.contains("frontend"), "{plan}");

    let bad = get(
        &server,
        &format!("/api/search?q=%7B%7D&explain=yes&{}", window()),
    )
    .await;
    assert_eq!(
        (bad.status, bad.text().as_str()),
        (
            400,
            "invalid explain: must be true, analyze or false, got \"yes\""
        )
    );
    let analyzed = get(
        &server,
        &format!("/api/search?q=%7B%7D&explain=analyze&{}", window()),
    )
    .await;
    assert_eq!(analyzed.status, 200);
    assert!(
        analyzed.text().contains("elapsed_compute"),
        "EXPLAIN ANALYZE shows each operator's metrics: {}",
        analyzed.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_command_explains_the_search_plan() {
    let server = dataset().await;
    let data_dir = server.dir.path().to_path_buf();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command
        .args([
            "traceql",
            "{ span.db.system = \"pg\" }",
            "--explain",
            "--data-dir",
        ])
        .arg(data_dir);
    let stdout = crate::common::run_to_success(command).await;
    let plan = String::from_utf8_lossy(&stdout);
    assert!(
        plan.contains("logical_plan") && plan.contains("physical_plan"),
        "{plan}"
    );
    assert!(plan.contains("db.system"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_say_where_their_time_went_in_server_timing() {
    let server = dataset().await;
    let response = reqwest::get(format!(
        "{}/api/search?q=%7B%7D&{}",
        server.http_url(),
        window()
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let timing = response
        .headers()
        .get("server-timing")
        .expect("a Server-Timing header")
        .to_str()
        .unwrap()
        .to_string();
    let stages: Vec<&str> = timing
        .split(", ")
        .map(|part| part.split_once(";dur=").expect("name;dur=ms").0)
        .collect();
    assert_eq!(
        stages,
        [
            "parse", "plan", "traces", "read", "spansets", "services", "roots", "encode"
        ],
        "{timing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustive_searches_over_more_traces_than_listed_ids_are_whole() {
    // Past a thousand traces the second pass joins with the chosen ids instead of listing
    // them: every trace still comes back with all its matched spans counted and its
    // per-service counts.
    let server = TestServer::start().await;
    let mut generator = spanlake::generator::Generator::new(5);
    let mut expected: HashMap<String, usize> = HashMap::new();
    for n in 0..1_200i64 {
        let spans = spanlake::schema::otlp::spans_from_request(
            &generator.trace_at(1_700_000_000_000_000_000 + n * 1_000_000),
        )
        .unwrap();
        expected.insert(
            spanlake::ids::trace_id_short_hex(&spans[0].trace_id),
            spans.len(),
        );
        server
            .server
            .ingester
            .push("single-tenant", spans)
            .await
            .unwrap();
        if n == 600 {
            server.server.ingester.flush(true).await.unwrap();
        }
    }
    let reply = get(
        &server,
        "/api/search?q=%7B%7D&limit=100000&spss=1&start=1699999990&end=1700000010",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let traces = body["traces"].as_array().unwrap();
    assert_eq!(traces.len(), expected.len());
    for trace in traces {
        let id = trace["traceID"].as_str().unwrap();
        let spans = expected[id];
        assert_eq!(trace["spanSets"][0]["matched"], spans, "{id}");
        let counted: u64 = trace["serviceStats"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["spanCount"].as_u64().unwrap())
            .sum();
        assert_eq!(counted as usize, spans, "{id}");
    }
}

#[tokio::test]
async fn searches_the_traces_table_decides_match_the_span_by_span_answer() {
    // `{ }`, `{ resource.service.name = … }`, `{ status = error }` and `| count() op n` after
    // them are decided from the `traces` table; `&& duration >= 0` keeps the same meaning but
    // is evaluated span by span. Some traces have spans both in a block and live.
    let server = TestServer::start().await;
    let mut generator = spanlake::generator::Generator::new(11);
    let mut later = Vec::new();
    for n in 0..300i64 {
        let mut spans = spanlake::schema::otlp::spans_from_request(
            &generator.trace_at(1_700_000_000_000_000_000 + n * 1_000_000),
        )
        .unwrap();
        if n % 7 == 0 {
            later.extend(spans.split_off(spans.len() / 2));
        }
        server
            .server
            .ingester
            .push("single-tenant", spans)
            .await
            .unwrap();
    }
    server.server.ingester.flush(true).await.unwrap();
    server
        .server
        .ingester
        .push("single-tenant", later)
        .await
        .unwrap();

    let answer = |query: String| {
        let server = &server;
        async move {
            let url = format!(
                "/api/search?q={}&limit=1000&spss=100&start=1699999990&end=1700000010",
                url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
            );
            let reply = get(server, &url).await;
            assert_eq!(reply.status, 200, "{query}: {}", reply.text());
            let body = reply.json();
            body["traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["traceID"].as_str().unwrap().to_string(),
                        t["spanSets"][0]["matched"].clone(),
                        t["serviceStats"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    for (filter, count) in [
        ("", ""),
        ("resource.service.name = \"frontend\"", ""),
        ("status = error", ""),
        ("\"checkout\" = resource.service.name && status = error", ""),
        ("", " | count() > 4"),
        ("resource.service.name = \"frontend\"", " | count() <= 2"),
        ("status = error", " | count() >= 1"),
    ] {
        let decided = answer(format!("{{ {filter} }}{count}")).await;
        let spanwise = if filter.is_empty() {
            format!("{{ duration >= 0 }}{count}")
        } else {
            format!("{{ {filter} && duration >= 0 }}{count}")
        };
        let expected = answer(spanwise).await;
        assert!(!expected.is_empty(), "{filter}{count} matches some traces");
        assert_eq!(decided, expected, "{{ {filter} }}{count}");
    }
}
