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
