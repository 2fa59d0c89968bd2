//! Arrow Flight SQL and plain Flight against a real server, with arrow-flight's own clients.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, CommandGetDbSchemas, CommandGetTables,
    CommandPreparedStatementQuery, ProstMessageExt, SqlInfo,
};
use arrow_flight::{CancelFlightInfoRequest, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use spanlake::generator::Generator;
use tonic::transport::Channel;

use crate::common::{TestServer, span_count};

/// Sends one generated trace, as `tenant` when given; returns its span count.
async fn export(server: &TestServer, tenant: Option<&str>, seed: u64) -> i64 {
    let request = Generator::new(seed).trace_at(1_700_000_000_000_000_000);
    let spans = span_count(&request) as i64;
    let mut request = tonic::Request::new(request);
    if let Some(t) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", t.parse().unwrap());
    }
    server.grpc_client().await.export(request).await.unwrap();
    spans
}

async fn client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// Every batch behind `info`'s endpoints.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint with a ticket");
        let stream = client.do_get(ticket).await?;
        out.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    fetch(client, info).await.unwrap()
}

fn single_count(batches: &[RecordBatch]) -> i64 {
    let counts: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(counts.len(), 1, "{batches:?}");
    counts[0]
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"))
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_stream_the_answer_with_its_schema() {
    let server = TestServer::start().await;
    let spans = export(&server, None, 1).await;
    let mut client = client(&server).await;
    let info = client
        .execute("SELECT count(*) AS n FROM spans".to_string(), None)
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(0).name(), "n");
    assert_eq!(
        single_count(&fetch(&mut client, info).await.unwrap()),
        spans
    );

    // Both halves of the table: flushed blocks and live rows.
    server.server.ingester.flush(true).await.unwrap();
    let more = export(&server, None, 2).await;
    let batches = query(&mut client, "SELECT count(*) FROM spans").await;
    assert_eq!(single_count(&batches), spans + more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_the_memory_limit_streams_through() {
    let server = TestServer::start_with(|c| c.query_memory_limit = 4 << 20).await;
    let mut client = client(&server).await;
    // 3M rows of two Int64 columns: 48 MB, twelve times the memory limit.
    let batches = query(
        &mut client,
        "SELECT value, value * 2 AS twice FROM generate_series(1, 3000000)",
    )
    .await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 3_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters() {
    let server = TestServer::start().await;
    export(&server, None, 1).await;
    let mut client = client(&server).await;
    let expected = single_count(
        &query(
            &mut client,
            "SELECT count(*) FROM spans WHERE service_name = 'frontend'",
        )
        .await,
    );
    assert!(expected > 0);
    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n FROM spans WHERE service_name = $1".to_string(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "n");
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(parameters.fields().len(), 1);
    assert_eq!(parameters.field(0).name(), "$1");
    let bind = |service: &str| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec![service]))],
        )
        .unwrap()
    };
    prepared.set_parameters(bind("frontend")).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        single_count(&fetch(&mut client, info).await.unwrap()),
        expected
    );
    prepared.set_parameters(bind("no-such-service")).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(single_count(&fetch(&mut client, info).await.unwrap()), 0);
    prepared.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_belong_to_their_session() {
    let server = TestServer::start().await;
    let spans = export(&server, None, 1).await;
    let mut first = client(&server).await;
    first.handshake("ana", "any").await.unwrap();
    let mut second = client(&server).await;
    second.handshake("ana", "any").await.unwrap();
    assert_ne!(first.token(), second.token());

    let prepared = first
        .prepare("SELECT count(*) FROM spans".to_string(), None)
        .await
        .unwrap();
    let info = prepared.clone().execute().await.unwrap();
    let handle = CommandPreparedStatementQuery::decode(
        arrow_flight::sql::Any::decode(info.flight_descriptor.clone().unwrap().cmd)
            .unwrap()
            .value,
    )
    .unwrap()
    .prepared_statement_handle;

    // Another session of the same tenant neither reads nor closes it.
    let ticket = Ticket::new(
        CommandPreparedStatementQuery {
            prepared_statement_handle: handle.clone(),
        }
        .as_any()
        .encode_to_vec(),
    );
    fn unknown(refused: impl std::fmt::Display) {
        let refused = refused.to_string();
        assert!(refused.contains("no prepared statement"), "{refused}");
    }
    unknown(second.do_get(ticket).await.unwrap_err());
    let close = arrow_flight::Action::new(
        "ClosePreparedStatement",
        ActionClosePreparedStatementRequest {
            prepared_statement_handle: handle,
        }
        .as_any()
        .encode_to_vec(),
    );
    unknown(second.do_action(close).await.unwrap_err());

    // Its own session still runs and closes it.
    assert_eq!(single_count(&fetch(&mut first, info).await.unwrap()), spans);
    prepared.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_the_tenants_tables() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let info = client.get_catalogs().await.unwrap();
    let catalogs = strings(&fetch(&mut client, info).await.unwrap(), "catalog_name");
    assert_eq!(catalogs, ["spanlake"]);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("spanlake".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = strings(&fetch(&mut client, info).await.unwrap(), "db_schema_name");
    assert_eq!(schemas, ["information_schema", "public"]);

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("sp%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await.unwrap();
    assert_eq!(strings(&tables, "table_name"), ["spans"]);
    let schema_bytes = tables[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>()
        .value(0)
        .to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).unwrap();
    assert!(schema.field_with_name("trace_id").is_ok());

    let info = client.get_table_types().await.unwrap();
    let types = strings(&fetch(&mut client, info).await.unwrap(), "table_type");
    assert_eq!(types, ["TABLE", "VIEW"]);

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let info = fetch(&mut client, info).await.unwrap();
    let names: Vec<u32> = info
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(names, [0, 3]);

    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = strings(&fetch(&mut client, info).await.unwrap(), "type_name");
    assert!(types.contains(&"VARCHAR".to_string()), "{types:?}");

    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "spans".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut client, info).await.unwrap();
    assert_eq!(keys.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_rows_through_tokens_and_handshakes() {
    let server = TestServer::start_with(|c| {
        c.multitenancy = true;
        c.flight.tokens.insert("token-a".into(), "tenant-a".into());
        c.flight.users.push(spanlake::config::FlightUser {
            username: "bob".into(),
            password: "secret".into(),
            tenant: "tenant-b".into(),
        });
    })
    .await;
    let a = export(&server, Some("tenant-a"), 1).await;
    let b = export(&server, Some("tenant-b"), 2).await + export(&server, Some("tenant-b"), 3).await;

    let mut anonymous = client(&server).await;
    let refused = anonymous
        .execute("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no tenant"), "{refused}");

    let mut as_a = client(&server).await;
    as_a.set_token("token-a".into());
    assert_eq!(
        single_count(&query(&mut as_a, "SELECT count(*) FROM spans").await),
        a
    );

    let mut as_b = client(&server).await;
    as_b.handshake("bob", "secret").await.unwrap();
    assert!(as_b.token().is_some());
    assert_eq!(
        single_count(&query(&mut as_b, "SELECT count(*) FROM spans").await),
        b
    );
    let wrong = client(&server)
        .await
        .handshake("bob", "guess")
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("wrong user name or password"),
        "{wrong}"
    );

    // Metadata goes through the tenant's session too: information_schema lists its tables,
    // whose rows are its own.
    let tables = query(
        &mut as_a,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await;
    assert_eq!(single_count(&tables), 4);
    let mut bad_token = client(&server).await;
    bad_token.set_token("nope".into());
    let refused = bad_token.get_catalogs().await.unwrap_err();
    assert!(
        refused.to_string().contains("unknown bearer token"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_naming_the_statement() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO spans SELECT * FROM spans",
        "COPY spans TO '/tmp/out.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
    ] {
        let error = client.execute(sql.to_string(), None).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("invalid argument"), "{sql}: {text}");
        assert!(
            text.contains("not supported") || text.contains("not allowed"),
            "{sql}: {text}"
        );
    }
    let error = client
        .execute_update("DELETE FROM spans".to_string(), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("read-only"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_stops() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let cancel = |info: &FlightInfo| arrow_flight::Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest {
            info: Some(info.clone()),
        }
        .encode_to_vec()
        .into(),
    };

    // Cancelled before it runs.
    let info = client.execute("SELECT 1".to_string(), None).await.unwrap();
    client.do_action(cancel(&info)).await.unwrap();
    let error = fetch(&mut client, info).await.unwrap_err();
    assert!(error.to_string().contains("cancelled"), "{error}");

    // Cancelled while it streams: the stream ends with the cancellation.
    let info = client
        .execute(
            "SELECT value FROM generate_series(1, 1000000000000)".to_string(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    assert!(stream.try_next().await.unwrap().is_some());
    client.do_action(cancel(&info)).await.unwrap();
    let error = loop {
        match stream.try_next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the cancellation"),
            Err(e) => break e,
        }
    };
    assert!(error.to_string().contains("cancelled"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_at_most_its_concurrent_queries() {
    let server = TestServer::start_with(|c| c.flight.max_concurrent_queries = 1).await;
    let mut client = client(&server).await;
    let info = client
        .execute(
            "SELECT value FROM generate_series(1, 1000000000000)".to_string(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut running = client.do_get(ticket).await.unwrap();
    assert!(running.try_next().await.unwrap().is_some());
    let info = client.execute("SELECT 1".to_string(), None).await.unwrap();
    let error = fetch(&mut client, info).await.unwrap_err();
    assert!(
        error.to_string().contains("already runs 1 queries"),
        "{error}"
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_flight_takes_sql_and_traceql_tickets() {
    let server = TestServer::start().await;
    let spans = export(&server, None, 1).await;
    let mut client = client(&server).await;
    let sql = client
        .do_get(Ticket::new("SELECT count(*) FROM spans"))
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(single_count(&sql), spans);

    let traceql = client
        .do_get(Ticket::new(
            r#"{"traceql": "{ resource.service.name = \"frontend\" }", "limit": 5}"#,
        ))
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert!(!traceql.is_empty());
    assert_eq!(
        traceql[0].schema().fields().len(),
        spanlake::schema::spans::schema().fields().len()
    );
    let services = strings(&traceql, "service_name");
    assert!(services.contains(&"frontend".to_string()), "{services:?}");

    let bad = client
        .do_get(Ticket::new(r#"{"traceql": "{ .a < "}"#))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("invalid TraceQL query"), "{bad}");

    let flights: Vec<FlightInfo> = client
        .inner_mut()
        .list_flights(arrow_flight::Criteria::default())
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let paths: Vec<String> = flights
        .iter()
        .filter_map(|f| f.flight_descriptor.as_ref())
        .flat_map(|d| d.path.clone())
        .collect();
    assert_eq!(paths, ["logs", "metrics", "spans", "traces"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_serves_tls_from_certificate_files() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    // A test CA, and the server's certificate signed by it.
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=spanlake-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out server.csr",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem",
    ] {
        let made = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(dir)
            .output()
            .expect("openssl makes the test certificates");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let (tls_cert, tls_key) = (cert.clone(), key.clone());
    let server = TestServer::start_with(move |c| {
        c.flight.tls_cert = Some(tls_cert);
        c.flight.tls_key = Some(tls_key);
    })
    .await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(dir.join("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", server.server.flight_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut secure = FlightSqlServiceClient::new(channel);
    assert_eq!(
        single_count(&query(&mut secure, "SELECT count(*) FROM spans").await),
        0
    );

    // A plain-text client gets no answer from the TLS port.
    let mut plain = client(&server).await;
    assert!(plain.execute("SELECT 1".to_string(), None).await.is_err());
}
