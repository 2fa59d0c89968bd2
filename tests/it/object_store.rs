//! Blocks in an S3-compatible object store (moto's server mode, started on 127.0.0.1 by the
//! test): ingest, flush, restart, query, compaction and retention work as on local disk, with
//! ranged reads cached on local disk.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::config::Config;
use spanlake::generator::Generator;
use spanlake::schema::Signal;
use spanlake::server::Server;
use spanlake::storage::Storage;

use crate::common::{engine_count, python, test_config};

const BUCKET: &str = "spanlake-test";
const T0: i64 = 1_700_000_000_000_000_000;

/// An S3-compatible server on a free loopback port, stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = Self { child, endpoint };
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http.get(&server.endpoint).send().await.is_ok() {
                let created = http
                    .put(format!("{}/{BUCKET}", server.endpoint))
                    .send()
                    .await
                    .unwrap();
                assert!(created.status().is_success(), "{created:?}");
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the S3-compatible server did not start on {}",
            server.endpoint
        );
    }

    fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn objects(storage: &Storage, prefix: &str) -> usize {
    let prefix = Path::from(prefix);
    let listed: Vec<_> = storage
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    listed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_s3_survive_flush_restart_compaction_and_retention() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = test_config(dir.path());
    config.storage_url = Some(format!("s3://{BUCKET}/blocks"));
    config.storage_options = s3.options();
    let cache = dir.path().join("cache");
    config.storage_cache_dir = Some(cache.clone());
    config.compaction.enabled = false;
    // Flushed rows leave the live set at once: only the test flushes, between its queries.
    config.ingester.flushed_grace = Duration::ZERO;
    config.ingester.flush_check = Duration::from_secs(3600);
    let storage = Storage::open_with(&config.storage_url(), &config.storage_options).unwrap();

    let server = Server::start(config.clone(), false).await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", server.otlp_grpc_addr))
        .await
        .unwrap();
    let mut generator = Generator::new(21);
    let mut first_trace = None;
    for n in 0..3 {
        let trace = generator.trace_at(T0 + n * 1_000_000);
        first_trace.get_or_insert_with(|| {
            hex::encode(&trace.resource_spans[0].scope_spans[0].spans[0].trace_id)
        });
        client.export(trace).await.unwrap();
        server.ingester.flush(true).await.unwrap();
    }
    let spans = engine_count(&server.engine, "SELECT count(*) FROM spans").await;
    assert!(spans > 0);
    let trace_blocks = "single-tenant/traces";
    assert_eq!(
        objects(&storage, trace_blocks).await,
        3 * 3,
        "3 blocks of 3 objects"
    );
    server.shutdown().await;

    let server = Server::start(config.clone(), false).await.unwrap();
    assert_eq!(
        engine_count(&server.engine, "SELECT count(*) FROM spans").await,
        spans
    );
    let by_id = reqwest::get(format!(
        "http://{}/api/v2/traces/{}",
        server.http_addr,
        first_trace.unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(by_id.status().as_u16(), 200);
    let cached = std::fs::read_dir(&cache).unwrap().count();
    assert!(
        cached > 0,
        "ranged reads of the blocks are cached on local disk"
    );
    assert_eq!(
        engine_count(&server.engine, "SELECT count(*) FROM spans").await,
        spans,
        "a read answered from the disk cache is the same"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spanlake_disk_cache_hits "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no disk cache hits in {metrics}"));
    assert!(hits > 0.0, "the second read was served from the disk cache");

    let lifecycle = spanlake::server::lifecycle(&config, &storage, server.engine.catalog());
    let report = lifecycle.run_once(spanlake::time::now_ns()).await.unwrap();
    assert_eq!(report.compactions, 1, "{report:?}");
    assert_eq!(
        engine_count(&server.engine, "SELECT count(*) FROM spans").await,
        spans
    );
    assert_eq!(lifecycle.delete_all_retired().await.unwrap(), 3);
    assert_eq!(objects(&storage, trace_blocks).await, 3, "one block left");

    let mut expiring = config.clone();
    expiring.retention.traces = Duration::from_secs(3600);
    let lifecycle = spanlake::server::lifecycle(&expiring, &storage, server.engine.catalog());
    let report = lifecycle.run_once(spanlake::time::now_ns()).await.unwrap();
    assert_eq!(report.expired_blocks, 1, "{report:?}");
    lifecycle.delete_all_retired().await.unwrap();
    assert_eq!(
        engine_count(&server.engine, "SELECT count(*) FROM spans").await,
        0
    );
    assert_eq!(objects(&storage, trace_blocks).await, 0);
    assert!(
        server
            .engine
            .catalog()
            .blocks(spanlake::tenant::SINGLE_TENANT, Signal::Traces)
            .is_empty()
    );
    server.shutdown().await;
}
