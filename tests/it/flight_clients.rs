//! End to end with Flight clients spanlake did not write: the ADBC Flight SQL driver and
//! pyarrow.flight (`tests/python/flight_clients.py`) query a real server as one tenant of two,
//! with a bearer token.

use std::path::PathBuf;
use std::process::Command;

use spanlake::generator::Generator;

use crate::common::{TestServer, python, run_to_success, single_i64, span_count};

async fn export_as(server: &TestServer, tenant: &str, seed: u64) {
    let request = Generator::new(seed).trace_at(1_700_000_000_000_000_000);
    assert!(span_count(&request) > 0);
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    server.grpc_client().await.export(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_and_pyarrow_read_their_tenants_rows() {
    let server = TestServer::start_with(|c| {
        c.multitenancy = true;
        c.flight.tokens.insert("token-a".into(), "tenant-a".into());
    })
    .await;
    export_as(&server, "tenant-a", 1).await;
    server.server.ingester.flush(true).await.unwrap();
    export_as(&server, "tenant-a", 2).await;
    export_as(&server, "tenant-b", 3).await;
    let engine = &server.server.engine;
    let count = |sql: &'static str| async move {
        single_i64(&engine.sql("tenant-a", sql).await.unwrap().1)
    };
    let spans = count("SELECT count(*) FROM spans").await;
    let frontend = count("SELECT count(*) FROM spans WHERE service_name = 'frontend'").await;
    assert!(frontend > 0);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/flight_clients.py");
    let mut command = Command::new(python());
    command
        .arg(script)
        .arg(format!("grpc://{}", server.server.flight_addr))
        .arg("token-a");
    let seen: serde_json::Value = serde_json::from_slice(&run_to_success(command).await).unwrap();

    let adbc = &seen["adbc"];
    assert_eq!(adbc["spans"], spans);
    assert_eq!(adbc["frontend"], frontend);
    assert_eq!(
        adbc["tables"],
        serde_json::json!(["logs", "metrics", "spans", "traces"])
    );
    assert!(
        adbc["span_columns"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("trace_id"))
    );
    assert!(
        adbc["services"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("frontend"))
    );

    let plain = &seen["pyarrow"];
    assert_eq!(plain["spans"], spans);
    assert!(
        plain["traceql_services"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("frontend"))
    );
    assert!(plain["traceql_rows"].as_i64().unwrap() > 0);
    assert_eq!(
        plain["flights"],
        serde_json::json!(["logs", "metrics", "spans", "traces"])
    );
}
