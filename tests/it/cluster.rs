//! A cluster of in-process members on 127.0.0.1: rows distributed to the holders of their
//! shards, queries executed across the members, answers equal to one node holding all data.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use spanlake::config::{ClusterSettings, MemberSettings, WriteConsistency};
use spanlake::generator::Generator;
use spanlake::server::Server;
use tempfile::TempDir;

use crate::common::{TestServer, test_config};

/// `n` distinct ports of 127.0.0.1, free when asked: members must know each other's
/// addresses before any of them starts. All are held until all are chosen, so that none is
/// handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Members of a test cluster, each with its data in a temp dir.
struct TestCluster {
    members: Vec<Option<Server>>,
    _dirs: Vec<TempDir>,
}

const SHARDS: u32 = 8;

impl TestCluster {
    async fn start(size: usize, replication_factor: usize) -> Self {
        let free = free_ports(2 * size);
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
            servers.push(Some(Server::start(config.clone(), false).await.unwrap()));
        }
        let cluster = Self {
            members: servers,
            _dirs: dirs,
        };
        cluster.check_health().await;
        cluster
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
];

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
}
