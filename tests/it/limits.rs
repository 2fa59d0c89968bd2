//! Resource limits end in clean errors, never in a dead process.

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_fails_cleanly_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|c| c.query_memory_limit = 1 << 20).await;
    // array_agg holds every value in one accumulator: it cannot spill, so it must fail.
    let result = server
        .server
        .engine
        .sql(
            "single-tenant",
            "SELECT array_agg(value) FROM generate_series(1, 5000000)",
        )
        .await;
    let error = result.expect_err("5M values cannot fit in 1 MiB");
    assert!(error.kind == spanlake::query::ErrorKind::Limit, "{error}");
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_over_its_memory_share_fails_while_another_runs() {
    let server = TestServer::start_with(|c| {
        c.multitenancy = true;
        c.query_memory_limit = 64 << 20;
        c.query_memory_limit_per_tenant = Some(1 << 20);
        c.flight.tokens.insert("token-a".into(), "tenant-a".into());
    })
    .await;
    let engine = &server.server.engine;
    let big = "SELECT array_agg(value) FROM generate_series(1, 5000000)";
    let error = engine.sql("tenant-a", big).await.expect_err("over 1 MiB");
    assert_eq!(error.kind, spanlake::query::ErrorKind::Limit, "{error}");
    assert!(
        error
            .message
            .contains("tenant tenant-a may use 1048576 bytes"),
        "{error}"
    );
    // Within its share, the same tenant and another one still run.
    let small = "SELECT count(*) FROM generate_series(1, 1000)";
    assert!(engine.sql("tenant-a", small).await.is_ok());
    assert!(engine.sql("tenant-b", small).await.is_ok());

    // Over Flight SQL the same limit is RESOURCE_EXHAUSTED.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", server.server.flight_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    client.set_token("token-a".into());
    let info = client.execute(big.to_string(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    use futures::TryStreamExt;
    let error = match client.do_get(ticket).await {
        Err(e) => e.to_string(),
        Ok(stream) => stream
            .try_collect::<Vec<_>>()
            .await
            .expect_err("the query should fail")
            .to_string(),
    };
    assert!(error.contains("resource has been exhausted"), "{error}");
    assert!(error.contains("tenant tenant-a may use"), "{error}");
}
