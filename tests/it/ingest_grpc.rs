//! OTLP/gRPC: exports land; bad payloads get InvalidArgument, oversized ones ResourceExhausted.

use spanlake::generator::Generator;
use tonic::Code;

use crate::common::{TestServer, span_count};

#[tokio::test]
async fn exported_spans_are_queryable_right_after_the_ack() {
    let server =
        TestServer::start_with(|c| c.ingester.trace_idle = std::time::Duration::from_secs(3600))
            .await;
    let mut client = server.grpc_client().await;
    let mut generator = Generator::new(3);
    let mut sent = 0;
    for n in 0..10 {
        let request = generator.trace_at(n);
        sent += span_count(&request) as i64;
        client.export(request).await.unwrap();
    }
    assert_eq!(server.count("SELECT count(*) FROM spans").await, sent);
    assert_eq!(server.count("SELECT count(*) FROM traces").await, 10);
}

#[tokio::test]
async fn an_empty_trace_id_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut request = Generator::new(3).trace_at(0);
    request.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clear();
    let status = server
        .grpc_client()
        .await
        .export(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("trace_id must be 16 bytes"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|c| c.max_request_bytes = 4096).await;
    let mut request = Generator::new(3).trace_at(0);
    request.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(10_000);
    let mut client = server.grpc_client().await;
    let status = client.export(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    client.export(Generator::new(4).trace_at(0)).await.unwrap();
}
