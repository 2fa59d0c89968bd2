//! Block lifecycle: compaction reunites split traces and drops retried duplicates while queries
//! keep seeing every row exactly once, `kill -9` at any point of a compaction loses and doubles
//! nothing, and retention removes exactly the blocks wholly past it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use spanlake::config::Config;
use spanlake::generator::Generator;
use spanlake::schema::Signal;
use spanlake::server::Server;
use spanlake::storage::Storage;

use crate::common::{engine_count, http_sql, single_i64, spawn_serve, test_config};

const TENANT: &str = spanlake::tenant::SINGLE_TENANT;

/// A config whose blocks may be compacted right after they are flushed; nothing runs in the
/// background: the tests drive flushes and the lifecycle. (With no grace for flushed rows, a
/// flush between a query's listing of blocks and its read of live rows would hide those rows
/// from that query: only the tests flush here, between queries.)
fn config(dir: &std::path::Path) -> Config {
    let mut config = test_config(dir);
    config.compaction.enabled = false;
    config.ingester.flush_check = Duration::from_secs(3600);
    config.ingester.flushed_grace = Duration::ZERO;
    config
}

fn span(trace: u8, id: u8, parent: Option<u8>, start: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span-{id}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        ..Default::default()
    }
}

fn export(spans: Vec<Span>) -> ExportTraceServiceRequest {
    export_as("api", spans)
}

fn export_as(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const T0: u64 = 1_700_000_000_000_000_000;

fn lifecycle(server: &Server, config: &Config) -> spanlake::storage::lifecycle::Lifecycle {
    let storage = Storage::open_with(&config.storage_url(), &config.storage_options).unwrap();
    spanlake::server::lifecycle(config, &storage, server.engine.catalog())
}

async fn count(server: &Server, query: &str) -> i64 {
    engine_count(&server.engine, query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_reunites_split_traces_drops_duplicates_and_never_shows_a_row_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(config.clone(), false).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", server.otlp_grpc_addr))
        .await
        .unwrap();
    // Trace 1 arrives in three flushes; its root is re-sent once, identical, as a retrying
    // exporter does. Trace 2 and several generated traces fill more blocks.
    let root = span(1, 1, None, T0);
    client.export(export(vec![root.clone()])).await.unwrap();
    server.ingester.flush(true).await.unwrap();
    client
        .export(export(vec![span(1, 2, Some(1), T0 + 10), root.clone()]))
        .await
        .unwrap();
    server.ingester.flush(true).await.unwrap();
    let mut generator = Generator::new(3);
    for n in 0..3 {
        client
            .export(generator.trace_at(T0 as i64 + n * 1_000_000))
            .await
            .unwrap();
        client
            .export(export(vec![span(2, 10 + n as u8, None, T0 + 100)]))
            .await
            .unwrap();
        server.ingester.flush(true).await.unwrap();
    }
    let catalog = server.engine.catalog().clone();
    let blocks_before = catalog.blocks(TENANT, Signal::Traces).len();
    assert!(blocks_before >= 5, "{blocks_before} blocks");
    // Spans of the service `late` arrive during the compaction; the counts leave them out.
    let all = "SELECT count(*) FROM spans WHERE service_name <> 'late'";
    let distinct =
        "SELECT count(DISTINCT (trace_id, span_id)) FROM spans WHERE service_name <> 'late'";
    let (rows_before, distinct_before) =
        (count(&server, all).await, count(&server, distinct).await);
    assert_eq!(
        rows_before,
        distinct_before + 1,
        "the retried root is stored twice"
    );

    // Queries and ingest run throughout the compaction: every query sees each span exactly
    // once.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u8;
            while !stop.load(Ordering::Relaxed) || sent < 3 {
                let late = span(100 + sent, 1, None, T0 + 200);
                client.export(export_as("late", vec![late])).await.unwrap();
                sent += 1;
                if sent == 100 {
                    break;
                }
            }
            i64::from(sent)
        })
    };
    let reader = {
        let (engine, stop) = (server.engine.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) || runs < 3 {
                assert_eq!(engine_count(&engine, distinct).await, distinct_before);
                let rows = engine_count(&engine, all).await;
                assert!(
                    rows == rows_before || rows == distinct_before,
                    "{rows} rows"
                );
                runs += 1;
            }
            runs
        })
    };
    let lifecycle = lifecycle(&server, &config);
    let report = lifecycle.run_once(spanlake::time::now_ns()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(reader.await.unwrap() >= 3);
    let late = writer.await.unwrap();
    assert!(report.compactions >= 1, "{report:?}");
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM spans WHERE service_name = 'late'"
        )
        .await,
        late,
        "every span that arrived during the compaction is there, once"
    );

    let blocks = catalog.blocks(TENANT, Signal::Traces);
    let compacted: Vec<_> = blocks.iter().filter(|b| b.compaction_level == 1).collect();
    assert_eq!(compacted.len(), 1, "one window, one merged block");
    assert_eq!(compacted[0].compacted_from.len(), blocks_before);
    assert!(
        blocks
            .iter()
            .all(|b| b.compaction_level == 1 || !compacted[0].compacted_from.contains(&b.block_id)),
        "the replaced blocks are out of the catalog"
    );
    assert_eq!(
        count(&server, all).await,
        distinct_before,
        "the duplicate is dropped once"
    );
    assert_eq!(count(&server, distinct).await, distinct_before);
    let trace_one = "to_trace_id('01010101010101010101010101010101')";
    assert_eq!(
        count(
            &server,
            &format!("SELECT count(*) FROM traces WHERE trace_id = {trace_one}")
        )
        .await,
        1,
        "the split trace has one traces row again"
    );
    let (_, batches) = server
        .engine
        .sql(
            TENANT,
            &format!(
                "SELECT c.nested_set_parent = p.nested_set_left FROM spans c JOIN spans p \
                 ON c.parent_span_id = p.span_id AND c.trace_id = p.trace_id \
                 WHERE c.trace_id = {trace_one}"
            ),
        )
        .await
        .unwrap();
    assert!(
        arrow::array::AsArray::as_boolean(batches[0].column(0)).value(0),
        "the child's nested-set parent is its parent, now that both are in one block"
    );
    let search = reqwest::get(format!(
        "http://{}/api/search?q=%7B%20name%20%3D%20%22span-2%22%20%7D&start=1699999999&end=1700000100",
        server.http_addr
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let found: serde_json::Value = serde_json::from_slice(&search).unwrap();
    assert_eq!(found["traces"].as_array().map(Vec::len), Some(1), "{found}");

    // The replaced blocks' files wait for the grace period, then go.
    let dirs = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("blocks/single-tenant/traces/shard-0"))
            .unwrap()
            .count()
    };
    // Late spans may have been flushed meanwhile: flush the rest, then count directories.
    server.ingester.flush(true).await.unwrap();
    let current = catalog.blocks(TENANT, Signal::Traces).len();
    assert_eq!(dirs(dir.path()), current + blocks_before);
    assert_eq!(lifecycle.delete_all_retired().await.unwrap(), blocks_before);
    assert_eq!(dirs(dir.path()), current);
    server.shutdown().await;

    // A restart reads the compacted block alone.
    let server = Server::start(config, false).await.unwrap();
    assert_eq!(count(&server, all).await, distinct_before);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_blocks_compact_sorted_and_still_prune_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(config.clone(), false).await.unwrap();
    let http = reqwest::Client::new();
    let mut generator = Generator::new(9);
    let mut metrics = spanlake::generator::MetricsAggregator::default();
    for n in 0..4 {
        let trace = generator.trace_at(T0 as i64 + n * 1_000_000);
        metrics.observe(&trace);
        let logs = generator.logs_for(&trace);
        for (path, body) in [
            ("/v1/logs", prost::Message::encode_to_vec(&logs)),
            (
                "/v1/metrics",
                prost::Message::encode_to_vec(&metrics.export_at(T0 as i64 + n * 1_000_000)),
            ),
        ] {
            let response = http
                .post(format!("http://{}{path}", server.otlp_http_addr))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
        server.ingester.flush(true).await.unwrap();
    }
    let logs_before = count(&server, "SELECT count(*) FROM logs").await;
    let points_before = count(&server, "SELECT count(*) FROM metrics").await;
    let frontend_points = "SELECT count(*) FROM metrics WHERE metric_name = 'http.server.requests'";
    let frontend_before = count(&server, frontend_points).await;
    assert!(frontend_before > 0);
    let report = lifecycle(&server, &config)
        .run_once(spanlake::time::now_ns())
        .await
        .unwrap();
    assert_eq!(report.compactions, 2, "{report:?}");
    let catalog = server.engine.catalog();
    for signal in [Signal::Logs, Signal::Metrics] {
        let blocks = catalog.blocks(TENANT, signal);
        assert_eq!(blocks.len(), 1, "{signal:?}");
        assert!(
            !blocks[0].names.is_empty(),
            "{signal:?} blocks still list their names"
        );
    }
    assert_eq!(
        count(&server, "SELECT count(*) FROM logs").await,
        logs_before
    );
    assert_eq!(
        count(&server, "SELECT count(*) FROM metrics").await,
        points_before
    );
    assert_eq!(count(&server, frontend_points).await, frontend_before);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_blocks_wholly_past_it_per_tenant_and_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.multitenancy = true;
    config.retention.traces = Duration::from_secs(3600);
    config.retention.tenants.insert(
        "keeper".into(),
        spanlake::config::TenantRetention {
            traces: Some(Duration::ZERO),
            ..Default::default()
        },
    );
    let server = Server::start(config.clone(), false).await.unwrap();
    let now = spanlake::time::now_ns() as u64;
    let hour = 3_600_000_000_000u64;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.otlp_grpc_addr))
        .await
        .unwrap();
    let send = |tenant: &str, spans: Vec<Span>| {
        let mut request = tonic::Request::new(export(spans));
        request
            .metadata_mut()
            .insert("x-scope-orgid", tenant.parse().unwrap());
        request
    };
    // Old: wholly past the hour. Straddling: one span past it, one inside. Recent: inside.
    let old = vec![span(1, 1, None, now - 3 * hour)];
    let straddling = vec![
        span(2, 1, None, now - 2 * hour),
        span(2, 2, Some(1), now - 60),
    ];
    let recent = vec![span(3, 1, None, now - 60)];
    for spans in [old.clone(), straddling, recent] {
        client.export(send("acme", spans)).await.unwrap();
        server.ingester.flush(true).await.unwrap();
    }
    client.export(send("keeper", old)).await.unwrap();
    server.ingester.flush(true).await.unwrap();

    let report = lifecycle(&server, &config)
        .run_once(now as i64)
        .await
        .unwrap();
    assert_eq!(report.expired_blocks, 1, "{report:?}");
    let count_of = |tenant: &'static str| {
        let engine = server.engine.clone();
        async move {
            single_i64(
                &engine
                    .sql(tenant, "SELECT count(*) FROM spans")
                    .await
                    .unwrap()
                    .1,
            )
        }
    };
    assert_eq!(
        count_of("acme").await,
        3,
        "the straddling block keeps both its spans"
    );
    assert_eq!(
        count_of("keeper").await,
        1,
        "0s keeps a tenant's blocks forever"
    );
    server.shutdown().await;
}

/// Serves `data` with a config file making every flushed block compactable at once and the
/// lifecycle run every 50 ms; `fault` aborts the process at that point.
fn spawn_compacting(data: &std::path::Path, fault: &str) -> crate::common::ServeProcess {
    let config = data.join("compacting.toml");
    std::fs::write(
        &config,
        "[ingester]\nflushed_grace = \"0s\"\n[compaction]\ninterval = \"50ms\"\ndelete_grace = \"0s\"\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let args = [
        "--config",
        config.as_str(),
        "--trace-idle",
        "10ms",
        "--max-block-age",
        "0s",
        "--flush-check",
        "20ms",
    ];
    crate::common::spawn_serve_with_env(data, &args, &[(spanlake::storage::FAULT_ENV, fault)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_of_a_compaction_loses_and_doubles_nothing() {
    for point in ["compaction-files-written", "compaction-committed"] {
        let data = tempfile::tempdir().unwrap();
        let mut process = spawn_compacting(data.path(), point);
        let mut client = TraceServiceClient::connect(process.otlp_grpc.clone())
            .await
            .unwrap();
        let mut generator = Generator::new(77);
        let mut acked = HashSet::new();
        let mut died = false;
        for n in 0..2_000i64 {
            let request = generator.trace_at(T0 as i64 + n * 1_000_000);
            let ids: Vec<_> = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
                .collect();
            if client.export(request).await.is_err() {
                died = true;
                break;
            }
            acked.extend(ids);
            if process.child.try_wait().unwrap().is_some() {
                died = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(died, "{point}: the fault point was never reached");
        let _ = process.child.kill();
        process.child.wait().unwrap();

        // Restarted with the default config: nothing compacts while the test reads.
        let mut process = spawn_serve(data.path(), &[]);
        let batches = http_sql(
            &process.http,
            "SELECT id_hex(trace_id), id_hex(span_id) FROM spans",
        )
        .await
        .unwrap();
        let mut seen = HashSet::new();
        let mut rows = 0;
        for batch in &batches {
            let t = arrow::array::AsArray::as_string::<i32>(batch.column(0));
            let s = arrow::array::AsArray::as_string::<i32>(batch.column(1));
            for i in 0..batch.num_rows() {
                seen.insert((t.value(i).to_string(), s.value(i).to_string()));
                rows += 1;
            }
        }
        assert_eq!(rows, seen.len(), "{point}: no span is read twice");
        let missing = acked.iter().filter(|id| !seen.contains(*id)).count();
        assert_eq!(
            missing, 0,
            "{point}: {missing} acknowledged spans are missing"
        );
        // Startup removed what the crash left: once the server has stopped (gracefully, so
        // that it leaves nothing half-written itself), every block directory is committed,
        // and none is one a committed compaction replaced.
        let terminated = std::process::Command::new("kill")
            .args(["-TERM", &process.child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        process.child.wait().unwrap();
        let shard = data.path().join("blocks/single-tenant/traces/shard-0");
        let metas: Vec<serde_json::Value> = std::fs::read_dir(&shard)
            .unwrap()
            .map(|dir| {
                let meta = dir.unwrap().path().join("meta.json");
                serde_json::from_slice(&std::fs::read(&meta).unwrap_or_else(|e| {
                    panic!("{point}: {} is left without its meta: {e}", meta.display())
                }))
                .unwrap()
            })
            .collect();
        let replaced: HashSet<&str> = metas
            .iter()
            .flat_map(|m| m["compacted_from"].as_array().into_iter().flatten())
            .filter_map(|id| id.as_str())
            .collect();
        assert!(
            metas
                .iter()
                .all(|m| !replaced.contains(m["block_id"].as_str().unwrap())),
            "{point}: a replaced block is still there"
        );
    }
}
