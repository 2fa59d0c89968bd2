//! A cluster of in-process members on 127.0.0.1: rows distributed to the holders of their
//! shards, queries executed across the members, answers equal to one node holding all data.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use spanlake::cluster::free_loopback_ports;
use spanlake::config::{ClusterSettings, MemberSettings, WriteConsistency};
use spanlake::generator::Generator;
use spanlake::server::{Server, StartError};
use tempfile::TempDir;

use crate::common::{ServeProcess, TestServer, test_config};

/// Members of a test cluster, each with its data in a temp dir.
struct TestCluster {
    members: Vec<Option<Server>>,
    configs: Vec<spanlake::config::Config>,
    _dirs: Vec<TempDir>,
}

const SHARDS: u32 = 8;

impl TestCluster {
    /// Starts `size` members. A port chosen free can be taken by another test before its
    /// member binds it; then the members started so far stop and the cluster starts again on
    /// other ports.
    async fn start(size: usize, replication_factor: usize) -> Self {
        for _ in 0..5 {
            if let Some(cluster) = Self::try_start(size, replication_factor).await {
                return cluster;
            }
        }
        panic!("no free ports for a {size}-member cluster after 5 attempts");
    }

    /// Starts the members on ports free now, or `None` when one of the ports was taken.
    async fn try_start(size: usize, replication_factor: usize) -> Option<Self> {
        let free = free_loopback_ports(2 * size).unwrap();
        let ports: Vec<(u16, u16)> = free.chunks(2).map(|p| (p[0], p[1])).collect();
        let members: Vec<MemberSettings> = ports
            .iter()
            .enumerate()
            .map(|(i, (http, internal))| MemberSettings {
                name: format!("node-{i}"),
                http: format!("127.0.0.1:{http}"),
                internal: format!("127.0.0.1:{internal}"),
            })
            .collect();
        let mut dirs = Vec::new();
        let mut configs = Vec::new();
        for (i, (http, internal)) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut config = test_config(dir.path());
            config.http_listen = format!("127.0.0.1:{http}").parse().unwrap();
            config.cluster_listen = format!("127.0.0.1:{internal}").parse().unwrap();
            config.ingester.shards = SHARDS;
            config.cluster = Some(ClusterSettings {
                self_name: format!("node-{i}"),
                members: members.clone(),
                replication_factor,
                write_consistency: WriteConsistency::Quorum,
                // Tests check health explicitly; the periodic check only repeats it.
                health_check: Duration::from_secs(3600),
                partial_results: true,
            });
            dirs.push(dir);
            configs.push(config);
        }
        let mut servers = Vec::new();
        for config in &configs {
            match Server::start(config.clone(), false).await {
                Ok(server) => servers.push(Some(server)),
                Err(StartError::Bind { .. }) => {
                    for server in servers.into_iter().flatten() {
                        server.shutdown().await;
                    }
                    return None;
                }
                Err(e) => panic!("member failed to start: {e}"),
            }
        }
        let cluster = Self {
            members: servers,
            configs,
            _dirs: dirs,
        };
        cluster.check_health().await;
        Some(cluster)
    }

    /// Every running member checks every other one now.
    async fn check_health(&self) {
        for server in self.members.iter().flatten() {
            server.cluster.as_ref().unwrap().check_members().await;
        }
    }

    fn member(&self, i: usize) -> &Server {
        self.members[i].as_ref().unwrap()
    }

    /// Stops member `i` (flushing what it holds) and lets the others notice.
    async fn stop(&mut self, i: usize) {
        self.members[i].take().unwrap().shutdown().await;
        self.check_health().await;
    }

    /// Starts member `i` again on its data and ports, and lets the others notice.
    async fn restart(&mut self, i: usize) {
        let server = Server::start(self.configs[i].clone(), false).await.unwrap();
        self.members[i] = Some(server);
        self.check_health().await;
    }
}

/// SQL over HTTP: the status, the partial-answer header and the count of the one-row answer.
async fn http_count(
    server: &Server,
    path_and_query: &str,
    query: &str,
) -> (u16, Option<String>, i64) {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path_and_query}", server.http_addr))
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let partial = response
        .headers()
        .get(spanlake::api::partial::PARTIAL_HEADER)
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.bytes().await.unwrap();
    if status != 200 {
        return (status, partial, -1);
    }
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    (status, partial, crate::common::single_i64(&batches))
}

/// The same traces for every deployment compared.
fn traces(
    count: i64,
) -> Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest> {
    let mut generator = Generator::new(77);
    (0..count)
        .map(|n| generator.trace_at(1_700_000_000_000_000_000 + n * 50_000_000))
        .collect()
}

async fn export_all(
    otlp_grpc: std::net::SocketAddr,
    requests: &[opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest],
) {
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{otlp_grpc}"),
    )
    .await
    .unwrap();
    for request in requests {
        client.export(request.clone()).await.unwrap();
    }
}

async fn sql(server: &Server, query: &str) -> String {
    let batches: Vec<RecordBatch> = server
        .engine
        .sql(spanlake::tenant::SINGLE_TENANT, query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .1;
    pretty_format_batches(&batches).unwrap().to_string()
}

const AGGREGATES: &[&str] = &[
    "SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM spans",
    "SELECT service_name, count(*) AS n, sum(duration_ns) AS total FROM spans GROUP BY service_name ORDER BY service_name",
    "SELECT count(*) FROM traces",
    "SELECT name, max(duration_ns) AS slowest FROM spans GROUP BY name ORDER BY slowest DESC, name LIMIT 5",
    "SELECT service_name, sketch_quantile(sketch(duration_ns), 0.95) AS p95, sketch(duration_ns) AS state FROM spans GROUP BY service_name ORDER BY service_name",
];

/// Tempo API reads whose answers must not depend on where the data lives: the parts of
/// their JSON answers that are data (not timings or byte counts).
fn tempo_reads(trace_id: &str) -> Vec<(String, &'static str)> {
    let window = "start=1699999000&end=1700000100";
    vec![
        (
            format!("/api/search?q=%7B%7D&{window}&limit=1000"),
            "traces",
        ),
        (
            format!("/api/search?q=%7B%20status%20%3D%20error%20%7D&{window}&limit=20"),
            "traces",
        ),
        (format!("/api/traces/{trace_id}"), "batches"),
        (
            format!("/api/v2/search/tag/resource.service.name/values?{window}"),
            "tagValues",
        ),
        (
            format!(
                "/api/metrics/query_range?q=%7B%7D%20%7C%20rate()%20by%20(resource.service.name)&{window}&step=10s"
            ),
            "series",
        ),
    ]
}

async fn tempo_json(server: &Server, path: &str, field: &str) -> serde_json::Value {
    let response = reqwest::get(format!("http://{}{path}", server.http_addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let body = response.bytes().await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value[field].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_answers_as_one_node_holding_all_data() {
    let requests = traces(300);
    let single = TestServer::start().await;
    export_all(single.server.otlp_grpc_addr, &requests).await;
    let cluster = TestCluster::start(3, 2).await;
    // Through different members: any member accepts any trace.
    export_all(cluster.member(0).otlp_grpc_addr, &requests[..150]).await;
    export_all(cluster.member(2).otlp_grpc_addr, &requests[150..]).await;

    for query in AGGREGATES {
        let expected = sql(&single.server, query).await;
        for member in 0..3 {
            assert_eq!(
                sql(cluster.member(member), query).await,
                expected,
                "{query} on node-{member}"
            );
        }
    }
    let trace_id = hex::encode(
        spanlake::schema::otlp::spans_from_request(&requests[123]).unwrap()[0].trace_id,
    );
    for (path, field) in tempo_reads(&trace_id) {
        let expected = tempo_json(&single.server, &path, field).await;
        assert!(!expected.is_null(), "{path}");
        for member in 0..3 {
            assert_eq!(
                tempo_json(cluster.member(member), &path, field).await,
                expected,
                "{path} on node-{member}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_stages_a_distributed_query_runs_in() {
    let cluster = TestCluster::start(3, 1).await;
    export_all(cluster.member(1).otlp_grpc_addr, &traces(50)).await;
    let explained = sql(
        cluster.member(0),
        "EXPLAIN SELECT service_name, count(*) FROM spans GROUP BY service_name",
    )
    .await;
    assert!(explained.contains("distributed_plan"), "{explained}");
    assert!(explained.contains("Stage"), "{explained}");
    assert!(explained.contains("Network"), "{explained}");
    assert!(explained.contains("ShardScanExec"), "{explained}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replica_up_answers_stay_complete_when_a_member_stops() {
    let requests = traces(200);
    let mut cluster = TestCluster::start(3, 2).await;
    export_all(cluster.member(0).otlp_grpc_addr, &requests).await;
    let total: i64 = requests
        .iter()
        .map(|r| crate::common::span_count(r) as i64)
        .sum();
    cluster.stop(1).await;
    let (status, partial, count) = http_count(
        cluster.member(0),
        "/api/v1/sql",
        "SELECT count(*) FROM spans",
    )
    .await;
    assert_eq!((status, partial, count), (200, None, total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quorum_writes_a_member_that_was_away_is_read_only_once_its_hints_arrive() {
    let requests = traces(120);
    let total: i64 = requests
        .iter()
        .map(|r| crate::common::span_count(r) as i64)
        .sum();
    // Every member holds every shard; a write needs two of them.
    let mut cluster = TestCluster::start(3, 3).await;
    let count = "SELECT count(*) FROM spans";
    cluster.stop(2).await;
    export_all(cluster.member(0).otlp_grpc_addr, &requests).await;
    let status = cluster.member(0).cluster.as_ref().unwrap().status();
    assert!(status.members[2].hints_kept > 0);
    for member in [0, 1] {
        let status = cluster.member(member).cluster.as_ref().unwrap().status();
        assert!(
            status.shards.iter().all(|s| s.missing_rows == ["node-2"]),
            "node-{member}: {:?}",
            status.shards
        );
    }

    // With a second holder away, an acknowledged write may be on the two away alone: no
    // shard can be read for sure.
    cluster.stop(1).await;
    let (status, partial, _) = http_count(cluster.member(0), "/api/v1/sql", count).await;
    assert_eq!(status, 200);
    assert!(partial.is_some_and(|p| p.contains("shards=")));
    cluster.restart(1).await;

    // Back, it learns that it misses rows, and reads its shards from the others.
    cluster.restart(2).await;
    let status = cluster.member(2).cluster.as_ref().unwrap().status();
    assert!(
        status
            .shards
            .iter()
            .all(|s| s.missing_rows == ["node-2"]
                && s.reader.as_ref().is_some_and(|r| r != "node-2")),
        "{:?}",
        status.shards
    );
    assert_eq!(
        http_count(cluster.member(2), "/api/v1/sql", count).await,
        (200, None, total)
    );

    // Once the hints arrived, the marks are gone everywhere, and its own data holds every
    // acknowledged span once.
    cluster
        .member(0)
        .cluster
        .as_ref()
        .unwrap()
        .deliver_hints()
        .await;
    cluster.check_health().await;
    let status = cluster.member(2).cluster.as_ref().unwrap().status();
    assert!(status.shards.iter().all(|s| s.missing_rows.is_empty()));
    assert_eq!(status.members[0].hints_kept, 0);
    assert_eq!(
        cluster.member(0).cluster.as_ref().unwrap().status().members[2].hints_kept,
        0
    );
    cluster.stop(2).await;
    let own = spanlake::server::open(&cluster.configs[2], true)
        .await
        .unwrap();
    assert_eq!(crate::common::engine_count(&own.engine, count).await, total);
    assert_eq!(
        crate::common::engine_count(
            &own.engine,
            "SELECT count(DISTINCT (trace_id, span_id)) FROM spans"
        )
        .await,
        total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replica_answers_are_flagged_partial_or_refused_when_strict() {
    let requests = traces(200);
    let mut cluster = TestCluster::start(3, 1).await;
    export_all(cluster.member(0).otlp_grpc_addr, &requests).await;
    let total: i64 = requests
        .iter()
        .map(|r| crate::common::span_count(r) as i64)
        .sum();
    let held_by_2: Vec<u32> = cluster.member(0).cluster.as_ref().unwrap().status().members[2]
        .primary_shards
        .clone();
    cluster.stop(2).await;

    let (status, partial, count) = http_count(
        cluster.member(0),
        "/api/v1/sql",
        "SELECT count(*) FROM spans",
    )
    .await;
    assert_eq!(status, 200);
    let listed: Vec<String> = held_by_2.iter().map(u32::to_string).collect();
    assert_eq!(partial, Some(format!("shards={}", listed.join(","))));
    assert!(count < total, "{count} of {total}");

    let (status, _, _) = http_count(
        cluster.member(0),
        "/api/v1/sql?partial=false",
        "SELECT count(*) FROM spans",
    )
    .await;
    assert_eq!(status, 503);

    // Flight SQL: the warning rides in the app metadata of the FlightInfo and of the first
    // message of the answer.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", cluster.member(0).flight_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut flight = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    let info = flight
        .execute("SELECT count(*) FROM spans".to_string(), None)
        .await
        .unwrap();
    let warning: serde_json::Value = serde_json::from_slice(&info.app_metadata).unwrap();
    assert_eq!(warning["partialShards"], serde_json::json!(held_by_2));
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let answer = flight.do_get(ticket).await.unwrap();
    assert!(answer.headers().get("x-spanlake-partial").is_some());
    let mut answer = answer.into_inner();
    let first = futures::StreamExt::next(&mut answer)
        .await
        .unwrap()
        .unwrap();
    let warning: serde_json::Value = serde_json::from_slice(&first.inner.app_metadata).unwrap();
    assert_eq!(warning["partialShards"], serde_json::json!(held_by_2));

    let body = reqwest::get(format!(
        "http://{}/api/search?q=%7B%7D&start=1699999000&end=1700000100&limit=1000",
        cluster.member(1).http_addr
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let search: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let metrics = &search["metrics"];
    assert!(
        metrics["completedJobs"].as_u64() < metrics["totalJobs"].as_u64(),
        "{metrics}"
    );
}

/// A member as its own `spanlake serve` process, configured by a file.
fn spawn_member(config: &std::path::Path) -> ServeProcess {
    crate::common::spawn_serving(member_command(config))
}

/// The command that runs a member configured by `config`.
fn member_command(config: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command.args(["serve", "--config"]).arg(config);
    command
}

/// The config files of a three-member cluster, RF 3 with quorum writes (every member holds
/// every shard; a write needs two of them), each member's in its directory of
/// `dirs`; member `i` serves HTTP on `ports[2i]` and the cluster on `ports[2i + 1]`.
fn process_member_configs(dirs: &[TempDir], ports: &[u16]) -> Vec<std::path::PathBuf> {
    let members: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{{ name = \"node-{i}\", http = \"127.0.0.1:{}\", internal = \"127.0.0.1:{}\" }}",
                ports[2 * i],
                ports[2 * i + 1]
            )
        })
        .collect();
    (0..3)
        .map(|i| {
            let path = dirs[i].path().join("spanlake.toml");
            let text = format!(
                "data_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{}\"\ncluster_listen = \"127.0.0.1:{}\"\n\
                 grpc_listen = \"127.0.0.1:0\"\notlp_grpc_listen = \"127.0.0.1:0\"\n\
                 otlp_http_listen = \"127.0.0.1:0\"\nflight_listen = \"127.0.0.1:0\"\n\
                 [ingester]\nshards = {SHARDS}\ntrace_idle = \"100ms\"\nmax_block_age = \"200ms\"\nflush_check = \"50ms\"\n\
                 [retention]\ntraces = \"0s\"\nlogs = \"0s\"\nmetrics = \"0s\"\n\
                 [cluster]\nself = \"node-{i}\"\nreplication_factor = 3\nhealth_check = \"100ms\"\nmembers = [{}]\n",
                dirs[i].path().join("data").display(),
                ports[2 * i],
                ports[2 * i + 1],
                members.join(", ")
            );
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// `observer`'s `/api/v1/cluster`, if it answers.
async fn cluster_status(observer: &str) -> Option<serde_json::Value> {
    let body = reqwest::get(format!("{observer}/api/v1/cluster"))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// Waits until `observer` sees no holder missing rows of any shard.
async fn wait_for_no_missing_rows(observer: &str) {
    for _ in 0..600 {
        let missing = cluster_status(observer).await.and_then(|s| {
            Some(
                s["shards"]
                    .as_array()?
                    .iter()
                    .any(|shard| shard["missingRows"] != serde_json::json!([])),
            )
        });
        if missing == Some(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{observer} still sees holders missing rows");
}

/// Waits until `observer` sees member `name` in `state` (health checks run every 100 ms).
async fn wait_for_state(observer: &str, name: &str, state: &str) {
    for _ in 0..600 {
        let status = cluster_status(observer).await;
        let seen = status.as_ref().and_then(|s| {
            s["members"]
                .as_array()?
                .iter()
                .find(|m| m["name"] == name)
                .map(|m| m["state"] == state)
        });
        if seen == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{observer} never saw {name} {state}");
}

/// Spans per trace id (hex) of a member's `spans` table, over SQL on HTTP.
async fn spans_per_trace(http: &str) -> std::collections::BTreeMap<String, i64> {
    let batches = crate::common::http_sql(
        http,
        "SELECT encode(trace_id, 'hex') AS id, count(*) AS n FROM spans GROUP BY 1",
    )
    .await
    .unwrap();
    spans_per_trace_of(&batches)
}

/// Spans per trace id from rows of (hex id, count).
fn spans_per_trace_of(batches: &[RecordBatch]) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for batch in batches {
        let ids = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let ids = ids
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let counts = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        for row in 0..batch.num_rows() {
            out.insert(ids.value(row).to_string(), counts.value(row));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_during_ingest_loses_no_acknowledged_span_and_catches_up() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // A port chosen free can be taken before its member binds it; then the members started
    // so far stop and all start again on other ports.
    let mut started = None;
    for _ in 0..5 {
        let configs = process_member_configs(&dirs, &free_loopback_ports(6).unwrap());
        let nodes: Vec<Option<ServeProcess>> = configs
            .iter()
            .map(|c| crate::common::try_spawn_serving(member_command(c)))
            .collect();
        if nodes.iter().all(Option::is_some) {
            started = Some((configs, nodes.into_iter().flatten().collect::<Vec<_>>()));
            break;
        }
        for mut node in nodes.into_iter().flatten() {
            node.child.kill().unwrap();
            node.child.wait().unwrap();
        }
    }
    let (configs, mut nodes) = started.expect("three members start within 5 attempts");
    for (i, node) in nodes.iter().enumerate() {
        for j in (0..3).filter(|&j| j != i) {
            wait_for_state(&node.http, &format!("node-{j}"), "up").await;
        }
    }

    let requests = traces(120);
    let mut client = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        nodes[0].otlp_grpc.clone(),
    )
    .await
    .unwrap();
    let mut acknowledged = std::collections::BTreeMap::new();
    for (n, request) in requests.iter().enumerate() {
        if n == 40 {
            nodes[2].child.kill().unwrap();
            nodes[2].child.wait().unwrap();
        }
        if client.export(request.clone()).await.is_ok() {
            let spans = spanlake::schema::otlp::spans_from_request(request).unwrap();
            acknowledged.insert(hex::encode(spans[0].trace_id), spans.len() as i64);
        }
    }
    // Two of three holders are enough: the writes go on while one is away.
    assert_eq!(acknowledged.len(), requests.len());

    // Meanwhile the replicas answer for the killed member: every acknowledged span is there.
    wait_for_state(&nodes[0].http, "node-2", "down").await;
    wait_for_state(&nodes[1].http, "node-2", "down").await;
    for node in &nodes[..2] {
        let seen = spans_per_trace(&node.http).await;
        for (id, spans) in &acknowledged {
            assert_eq!(
                seen.get(id),
                Some(spans),
                "trace {id} through {}",
                node.http
            );
        }
    }

    // Restarted on its data, it replays its WAL, answers the same, and gets what it missed
    // as hints.
    nodes[2] = spawn_member(&configs[2]);
    for node in &nodes[..2] {
        wait_for_state(&node.http, "node-2", "up").await;
    }
    for j in 0..2 {
        wait_for_state(&nodes[2].http, &format!("node-{j}"), "up").await;
    }
    let through_0 = spans_per_trace(&nodes[0].http).await;
    let through_2 = spans_per_trace(&nodes[2].http).await;
    assert_eq!(through_0, through_2);
    wait_for_no_missing_rows(&nodes[2].http).await;

    // Caught up, its own data holds every acknowledged span, once.
    for node in &mut nodes {
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
    let config = spanlake::config::Config::from_file(&configs[2]).unwrap();
    let own = spanlake::server::open(&config, true).await.unwrap();
    let batches = own
        .engine
        .sql(
            spanlake::tenant::SINGLE_TENANT,
            "SELECT encode(trace_id, 'hex') AS id, count(*) AS n FROM spans GROUP BY 1",
        )
        .await
        .unwrap()
        .1;
    assert_eq!(spans_per_trace_of(&batches), acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_members_their_state_and_shards() {
    let mut cluster = TestCluster::start(3, 2).await;
    cluster.stop(2).await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command.args(["cluster", "status", "--endpoint"]);
    command.arg(format!("http://{}", cluster.member(1).http_addr));
    let printed = String::from_utf8(crate::common::run_to_success(command).await).unwrap();
    assert!(printed.contains("as seen by node-1"), "{printed}");
    let state_of = |name: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(state_of("node-0").as_deref(), Some("up"), "{printed}");
    assert_eq!(state_of("node-1").as_deref(), Some("up"), "{printed}");
    assert_eq!(state_of("node-2").as_deref(), Some("down"), "{printed}");

    let status = cluster.member(0).cluster.as_ref().unwrap().status();
    let held: usize = status
        .members
        .iter()
        .map(|m| m.primary_shards.len() + m.replica_shards.len())
        .sum();
    assert_eq!(held, 2 * SHARDS as usize);
    assert!(
        status
            .shards
            .iter()
            .all(|s| s.reader.as_deref() != Some("node-2"))
    );
}
