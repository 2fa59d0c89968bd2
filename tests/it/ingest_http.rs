//! OTLP/HTTP: valid bodies land with their types; every malformed body gets the documented
//! 4xx and the server keeps serving.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spanlake::generator::Generator;

use crate::common::{TestServer, span_count};

async fn post(server: &TestServer, content_type: &str, body: Vec<u8>, gzip: bool) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("content-type", content_type)
        .body(body);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn sample() -> ExportTraceServiceRequest {
    Generator::new(11).trace_at(1_700_000_000_000_000_000)
}

async fn assert_still_serving(server: &TestServer) {
    let (status, body) = post(
        server,
        "application/x-protobuf",
        sample().encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn protobuf_json_and_gzip_bodies_are_accepted() {
    let server = TestServer::start().await;
    let request = sample();
    let spans = span_count(&request) as i64;
    assert_eq!(
        post(
            &server,
            "application/x-protobuf",
            request.encode_to_vec(),
            false
        )
        .await
        .0,
        200
    );
    let json = serde_json::to_vec(&Generator::new(12).trace_at(1)).unwrap();
    let json_spans = span_count(&Generator::new(12).trace_at(1)) as i64;
    assert_eq!(post(&server, "application/json", json, false).await.0, 200);
    let zipped = gzip(&Generator::new(13).trace_at(2).encode_to_vec());
    let zipped_spans = span_count(&Generator::new(13).trace_at(2)) as i64;
    assert_eq!(
        post(&server, "application/x-protobuf", zipped, true)
            .await
            .0,
        200
    );
    assert_eq!(
        server.count("SELECT count(*) FROM spans").await,
        spans + json_spans + zipped_spans
    );
}

#[tokio::test]
async fn otlp_json_with_hex_ids_and_string_ints_keeps_types() {
    let server = TestServer::start().await;
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
      "name":"op","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000",
      "attributes":[{"key":"http.response.status_code","value":{"intValue":"500"}},
                    {"key":"code","value":{"stringValue":"500"}},
                    {"key":"ratio","value":{"doubleValue":0.5}},
                    {"key":"ok","value":{"boolValue":true}}],
      "status":{"code":2,"message":"boom"}}]}]}]}"#;
    let (status, text) = post(&server, "application/json", body.as_bytes().to_vec(), false).await;
    assert_eq!(status, 200, "{text}");
    let count = server
        .count(
            "SELECT count(*) FROM spans WHERE trace_id = to_trace_id('5b8efff798038103d269b633813fc60c') \
             AND span_attrs_int['http.response.status_code'] = 500 AND span_attrs_str['code'] = '500' \
             AND span_attrs_float['ratio'] = 0.5 AND span_attrs_bool['ok'] AND http_status_code = 500 \
             AND status_code = 'error' AND kind = 'server' AND duration_ns = 500000000 AND service_name = 'json-svc'",
        )
        .await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn garbage_bytes_are_a_400_naming_protobuf() {
    let server = TestServer::start().await;
    let (status, body) = post(&server, "application/x-protobuf", vec![0xff; 64], false).await;
    assert_eq!(status, 400);
    assert!(body.contains("protobuf"), "{body}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_truncated_protobuf_is_a_400() {
    let server = TestServer::start().await;
    let mut bytes = sample().encode_to_vec();
    bytes.truncate(bytes.len() / 2);
    assert_eq!(
        post(&server, "application/x-protobuf", bytes, false)
            .await
            .0,
        400
    );
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn invalid_json_is_a_400_naming_json() {
    let server = TestServer::start().await;
    let (status, body) = post(
        &server,
        "application/json",
        b"{\"resourceSpans\": [".to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("JSON"), "{body}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_wrong_content_type_is_a_415() {
    let server = TestServer::start().await;
    let (status, body) = post(&server, "text/plain", b"hello".to_vec(), false).await;
    assert_eq!(status, 415);
    assert!(body.contains("text/plain"), "{body}");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn an_empty_trace_id_is_a_400_naming_the_span_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut request = sample();
    request.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clear();
    let (status, body) = post(
        &server,
        "application/json",
        serde_json::to_vec(&request).unwrap(),
        false,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("trace_id must be 16 bytes, got 0"), "{body}");
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 0);
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_also_when_it_only_grows_by_gunzip() {
    let server = TestServer::start_with(|c| c.max_request_bytes = 64 * 1024).await;
    let (status, body) = post(
        &server,
        "application/x-protobuf",
        vec![0; 200 * 1024],
        false,
    )
    .await;
    assert_eq!(status, 413);
    assert!(body.contains("65536"), "{body}");
    let bomb = gzip(&vec![0; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(
        post(&server, "application/x-protobuf", bomb, true).await.0,
        413
    );
    assert_still_serving(&server).await;
}
