//! Tenant isolation on the ingest and SQL paths.

use spanlake::generator::Generator;
use tonic::Code;

use crate::common::{TestServer, single_i64, span_count};

async fn export_as(
    server: &TestServer,
    tenant: Option<&str>,
    seed: u64,
) -> Result<usize, tonic::Status> {
    let request = Generator::new(seed).trace_at(0);
    let spans = span_count(&request);
    let mut request = tonic::Request::new(request);
    if let Some(t) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", t.parse().unwrap());
    }
    server.grpc_client().await.export(request).await?;
    Ok(spans)
}

#[tokio::test]
async fn each_tenant_sees_only_its_own_spans() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    let a = export_as(&server, Some("tenant-a"), 1).await.unwrap() as i64;
    let b = export_as(&server, Some("tenant-b"), 2).await.unwrap() as i64;
    server.server.ingester.flush(true).await.unwrap();
    let c = export_as(&server, Some("tenant-a"), 3).await.unwrap() as i64;
    let engine = &server.server.engine;
    let count = |tenant: &'static str| async move {
        single_i64(
            &engine
                .sql(tenant, "SELECT count(*) FROM spans")
                .await
                .unwrap()
                .1,
        )
    };
    assert_eq!(count("tenant-a").await, a + c);
    assert_eq!(count("tenant-b").await, b);
    assert_eq!(count("tenant-c").await, 0);
}

#[tokio::test]
async fn with_multitenancy_an_export_without_org_id_is_unauthenticated() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    let status = export_as(&server, None, 1).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "no org id");
    let status = export_as(&server, Some("../etc"), 1).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn with_multitenancy_sql_over_http_needs_an_org_id() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    export_as(&server, Some("acme"), 1).await.unwrap();
    let url = format!("{}{}", server.http_url(), spanlake::api::http::SQL_PATH);
    let client = reqwest::Client::new();
    let anonymous = client
        .post(&url)
        .body("SELECT count(*) FROM spans")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let other = client
        .post(&url)
        .header("X-Scope-OrgID", "someone-else")
        .body("SELECT count(*) FROM spans")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(other.bytes().await.unwrap()),
        None,
    )
    .unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(single_i64(&batches), 0);
}

#[tokio::test]
async fn tenant_ids_with_punctuation_get_their_own_blocks() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    let tenant = "team(a)*'b'";
    let spans = export_as(&server, Some(tenant), 5).await.unwrap() as i64;
    let report = server.server.ingester.flush(true).await.unwrap();
    assert_eq!(report.blocks, 1);
    let engine = &server.server.engine;
    assert_eq!(
        single_i64(
            &engine
                .sql(tenant, "SELECT count(*) FROM spans")
                .await
                .unwrap()
                .1
        ),
        spans
    );
    assert_eq!(
        single_i64(
            &engine
                .sql("team", "SELECT count(*) FROM spans")
                .await
                .unwrap()
                .1
        ),
        0
    );
}
