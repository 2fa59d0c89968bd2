//! User SQL is read-only and confined to the tenant's tables.

use crate::common::{TestServer, http_sql};

async fn refused(server: &TestServer, query: &str) -> String {
    match http_sql(&server.http_url(), query).await {
        Ok(_) => panic!("{query} was accepted"),
        Err((status, message)) => {
            assert_eq!(status, 400, "{query}: {message}");
            message
        }
    }
}

#[tokio::test]
async fn ddl_is_refused() {
    let server = TestServer::start().await;
    assert!(
        refused(&server, "CREATE TABLE t AS SELECT 1")
            .await
            .contains("DDL")
    );
    assert!(refused(&server, "DROP TABLE spans").await.contains("DDL"));
    assert!(
        refused(&server, "CREATE VIEW v AS SELECT * FROM spans")
            .await
            .contains("DDL")
    );
}

#[tokio::test]
async fn dml_and_copy_are_refused() {
    let server = TestServer::start().await;
    assert!(
        refused(&server, "INSERT INTO spans SELECT * FROM spans")
            .await
            .contains("DML")
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.csv");
    let message = refused(
        &server,
        &format!("COPY (SELECT 1) TO '{}'", target.display()),
    )
    .await;
    assert!(message.contains("COPY"), "{message}");
    assert!(!target.exists());
}

#[tokio::test]
async fn external_tables_and_file_reads_are_refused() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.csv");
    std::fs::write(&file, "a\n1\n").unwrap();
    let path = file.display();
    refused(
        &server,
        &format!("CREATE EXTERNAL TABLE x (a INT) STORED AS CSV LOCATION '{path}'"),
    )
    .await;
    let message = refused(&server, &format!("SELECT * FROM '{path}'")).await;
    assert!(message.contains("not found"), "{message}");
    refused(&server, &format!("SELECT * FROM read_csv('{path}')")).await;
    refused(&server, &format!("SELECT * FROM read_parquet('{path}')")).await;
}

#[tokio::test]
async fn statements_that_change_the_session_are_refused() {
    let server = TestServer::start().await;
    refused(&server, "SET datafusion.execution.batch_size = 1").await;
}
