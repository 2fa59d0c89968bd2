//! TraceQL string tests on attributes that have a dedicated column (`resource.service.name`,
//! `span.http.route`) answer exactly as the typed attribute maps do, including where the
//! column cannot tell a missing or non-string attribute from a value. One-span traces:
//!
//! ```text
//! A  resource without service.name (the column reads unknown_service)
//! B  resource service.name = 7 (an int)
//! C  resource service.name = "unknown_service" (the string itself)
//! D  service.name "api", span http.route "/x"
//! E  service.name "api", no http.route
//! F  service.name "api", span http.route "/y"; G the same with http.route = 5 (an int)
//! ```

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::Value as Json;

use crate::common::TestServer;

const BASE_S: u64 = 1_700_000_000;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> Value {
    Value::StringValue(s.into())
}

/// The traces, by name: resource attributes and span attributes.
fn traces() -> Vec<(char, Vec<KeyValue>, Vec<KeyValue>)> {
    let api = || vec![kv("service.name", text("api"))];
    vec![
        ('a', vec![kv("region", text("eu"))], vec![]),
        ('b', vec![kv("service.name", Value::IntValue(7))], vec![]),
        (
            'c',
            vec![kv("service.name", text("unknown_service"))],
            vec![],
        ),
        ('d', api(), vec![kv("http.route", text("/x"))]),
        ('e', api(), vec![]),
        ('f', api(), vec![kv("http.route", text("/y"))]),
        ('g', api(), vec![kv("http.route", Value::IntValue(5))]),
    ]
}

async fn server() -> TestServer {
    let server = TestServer::start().await;
    let resource_spans = traces()
        .into_iter()
        .enumerate()
        .map(|(i, (name, resource, attributes))| {
            let start = (BASE_S + i as u64) * 1_000_000_000;
            ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![name as u8; 16],
                        span_id: vec![name as u8; 8],
                        name: "op".into(),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 1_000_000,
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    let mut client = server.grpc_client().await;
    // Some traces in a block, the rest live, so both readers are covered.
    let mut request = ExportTraceServiceRequest { resource_spans };
    let live = request.resource_spans.split_off(4);
    client.export(request).await.unwrap();
    server.server.ingester.flush(true).await.unwrap();
    client
        .export(ExportTraceServiceRequest {
            resource_spans: live,
        })
        .await
        .unwrap();
    server
}

async fn get(server: &TestServer, query: &str, extra: &str) -> String {
    let url = format!(
        "{}/api/search?q={}&start={}&end={}&limit=100{extra}",
        server.http_url(),
        url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>(),
        BASE_S - 10,
        BASE_S + 100,
    );
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    response.text().await.unwrap()
}

/// The names of the traces a search finds, sorted.
async fn found(server: &TestServer, query: &str) -> String {
    let body: Json = serde_json::from_str(&get(server, query, "").await).unwrap();
    let mut names: Vec<char> = body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let id = t["traceID"].as_str().unwrap();
            u8::from_str_radix(&id[..2], 16).unwrap() as char
        })
        .collect();
    names.sort();
    names.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_tests_agree_with_the_attribute_maps() {
    let server = server().await;
    for (query, want) in [
        (r#"{ resource.service.name = "api" }"#, "defg"),
        (r#"{ resource.service.name = "unknown_service" }"#, "c"),
        (r#"{ resource.service.name = 7 }"#, "b"),
        (r#"{ resource.service.name =~ "a.*" }"#, "defg"),
        (r#"{ resource.service.name =~ "unknown.*" }"#, "c"),
        (r#"{ resource.service.name != "api" }"#, "c"),
        (r#"{ resource.service.name !~ "a.*" }"#, "c"),
        (
            r#"{ resource.service.name = "api" || resource.service.name = "unknown_service" }"#,
            "cdefg",
        ),
        (r#"{ span.http.route = "/x" }"#, "d"),
        (r#"{ span.http.route != "/x" }"#, "f"),
        (r#"{ span.http.route =~ "/.*" }"#, "df"),
        (r#"{ span.http.route !~ "/x" }"#, "f"),
        (r#"{ span.http.route = 5 }"#, "g"),
        (
            r#"{ span.http.route = "/x" || span.http.route = "/y" }"#,
            "df",
        ),
    ] {
        assert_eq!(found(&server, query).await, want, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equality_reads_the_dedicated_column_alone() {
    let server = server().await;
    let plan = get(
        &server,
        r#"{ resource.service.name = "api" && duration > 1ms }"#,
        "&explain=true",
    )
    .await;
    assert!(plan.contains("service_name"), "{plan}");
    assert!(!plan.contains("resource_attrs_str"), "{plan}");
    let plan = get(
        &server,
        r#"{ span.http.route =~ "/x|/y" }"#,
        "&explain=true",
    )
    .await;
    assert!(!plan.contains("span_attrs_str"), "{plan}");
}
