//! Resource limits end in clean errors, never in a dead process.

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_fails_cleanly_and_the_server_keeps_serving() {
    let server = TestServer::start_with(|c| c.query_memory_limit = 1 << 20).await;
    let result = server
        .server
        .engine
        .sql(
            "single-tenant",
            "SELECT v, count(*) FROM (SELECT value % 1000003 AS v FROM generate_series(1, 3000000)) GROUP BY v ORDER BY 2 DESC, 1",
        )
        .await;
    let error = result.expect_err("a 3M-row aggregation cannot fit in 1 MiB");
    assert!(
        matches!(error, spanlake::query::QueryError::ResourcesExhausted(_)),
        "{error}"
    );
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 0);
}
