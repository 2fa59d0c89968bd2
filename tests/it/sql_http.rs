//! SQL over HTTP streams its answer as Arrow IPC, JSON lines or CSV.

use crate::common::{TestServer, http_sql};

async fn post(server: &TestServer, accept: &str, query: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}{}",
            server.http_url(),
            spanlake::api::http::SQL_PATH
        ))
        .header("accept", accept)
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_csv_follow_the_accept_header() {
    let server = TestServer::start().await;
    let query = "SELECT value AS n, value * 2 AS twice FROM generate_series(1, 3) ORDER BY n";
    let (status, content_type, body) = post(&server, "application/x-ndjson", query).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    assert_eq!(
        body,
        "{\"n\":1,\"twice\":2}\n{\"n\":2,\"twice\":4}\n{\"n\":3,\"twice\":6}\n"
    );
    let (status, content_type, body) = post(&server, "text/csv", query).await;
    assert_eq!((status, content_type.as_str()), (200, "text/csv"));
    assert_eq!(body, "n,twice\n1,2\n2,4\n3,6\n");
    let (status, _, body) = post(&server, "text/csv", "SELECT nope FROM spans").await;
    assert_eq!(status, 400);
    assert!(body.contains("nope"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_is_a_complete_arrow_stream() {
    let server = TestServer::start().await;
    let batches = http_sql(&server.http_url(), "SELECT * FROM spans WHERE false")
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_the_memory_limit_streams_over_http() {
    let server = TestServer::start_with(|c| c.query_memory_limit = 4 << 20).await;
    let batches = http_sql(
        &server.http_url(),
        "SELECT value, value * 2 AS twice FROM generate_series(1, 3000000)",
    )
    .await
    .unwrap();
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        3_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_command_reads_over_http_or_flight() {
    let server = TestServer::start().await;
    for (flag, address) in [
        (None, format!("http://{}", server.server.flight_addr)),
        (Some("--http"), server.http_url()),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
        command.args(["sql", "--format", "csv", "--server", &address]);
        command.args(flag);
        command.arg("SELECT 40 + 2 AS answer");
        let stdout = crate::common::run_to_success(command).await;
        assert_eq!(String::from_utf8_lossy(&stdout), "answer\n42\n", "{flag:?}");
    }
}
