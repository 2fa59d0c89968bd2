//! The distributor: in a cluster, any member accepts an export, sends each shard's rows to the
//! shard's holders over the internal `ClusterIngest.Push` call (this node's own share goes
//! straight to its ingester), and acknowledges only once enough holders of every shard the
//! export touches have made their rows durable ([`Cluster::write_quorum`]).
//!
//! A refused export may have reached some holders; the client's retry then stores those rows
//! twice, as any at-least-once OTLP pipeline may (compaction merges spans by span id).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tonic::transport::Channel;

use super::{IngestError, Rows};
use crate::cluster::Cluster;
use crate::ingester::{Ingester, log_shard, point_shard, shard_of};
use crate::proto::cluster_ingest_client::ClusterIngestClient;
use crate::proto::cluster_ingest_server::{ClusterIngest, ClusterIngestServer};
use crate::proto::{PushRequest, PushResponse};

/// How long a push to another member may take before it counts as failed.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends rows to the holders of their shards.
#[derive(Debug, Clone)]
pub struct Distributor {
    cluster: Arc<Cluster>,
    shards: u32,
}

impl Distributor {
    /// A distributor over `cluster`, whose shard count is `shards`.
    pub fn new(cluster: Arc<Cluster>, shards: u32) -> Distributor {
        Distributor { cluster, shards }
    }

    /// The cluster rows are distributed over.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stores `rows` of `tenant` on the holders of their shards (`local` is this node's
    /// ingester); returns how many rows were stored once every shard has its write quorum.
    pub async fn distribute(
        &self,
        local: &Ingester,
        tenant: &str,
        rows: Rows,
    ) -> Result<usize, IngestError> {
        let count = rows.len();
        let (per_member, shards) = self.split(rows);
        let self_index = self.cluster.self_index();
        let pushes = per_member
            .into_iter()
            .enumerate()
            .filter_map(|(member, rows)| rows.map(|rows| (member, rows)))
            .map(|(member, rows)| async move {
                let outcome = if member == self_index {
                    local_push(local, tenant, rows).await
                } else {
                    self.push(member, tenant, &rows).await
                };
                (member, outcome)
            });
        let outcomes = join_all(pushes).await;
        let quorum = self.cluster.write_quorum();
        for shard in shards {
            let holders = self.cluster.holders(shard);
            let stored = outcomes
                .iter()
                .filter(|(member, outcome)| holders.contains(member) && outcome.is_ok())
                .count();
            if stored < quorum {
                // A refusal every holder agrees on (a tenant at its live limit) is the client's
                // to see as such; anything else is the cluster's trouble.
                let refusals: Vec<&IngestError> = outcomes
                    .iter()
                    .filter(|(member, _)| holders.contains(member))
                    .filter_map(|(_, outcome)| outcome.as_ref().err())
                    .collect();
                if let Some(IngestError::LiveLimit(message)) = refusals.first() {
                    return Err(IngestError::LiveLimit(message.clone()));
                }
                let why: Vec<String> = outcomes
                    .iter()
                    .filter(|(member, _)| holders.contains(member))
                    .filter_map(|(member, outcome)| {
                        outcome
                            .as_ref()
                            .err()
                            .map(|e| format!("{}: {e}", self.cluster.member(*member).name))
                    })
                    .collect();
                return Err(IngestError::Replication(format!(
                    "shard {shard} stored on {stored} of its {} holders, {quorum} needed ({})",
                    holders.len(),
                    why.join("; ")
                )));
            }
        }
        Ok(count)
    }

    /// The rows each member holds (none for members holding none of them), and the shards the
    /// rows fall in.
    fn split(&self, rows: Rows) -> (Vec<Option<Rows>>, Vec<u32>) {
        let members = self.cluster.len();
        let mut touched = vec![false; self.shards as usize];
        let shards = self.shards;
        let cluster = &self.cluster;
        fn spread<T: Clone>(
            rows: Vec<T>,
            members: usize,
            shard: impl Fn(&T) -> u32,
            cluster: &Cluster,
            touched: &mut [bool],
        ) -> Vec<Vec<T>> {
            let mut out: Vec<Vec<T>> = vec![Vec::new(); members];
            for row in rows {
                let s = shard(&row);
                touched[s as usize] = true;
                let holders = cluster.holders(s);
                if let Some((last, rest)) = holders.split_last() {
                    for &member in rest {
                        out[member].push(row.clone());
                    }
                    out[*last].push(row);
                }
            }
            out
        }
        let per_member: Vec<Option<Rows>> = match rows {
            Rows::Spans(rows) => spread(
                rows,
                members,
                |r| shard_of(&r.trace_id, shards),
                cluster,
                &mut touched,
            )
            .into_iter()
            .map(|r| (!r.is_empty()).then_some(Rows::Spans(r)))
            .collect(),
            Rows::Logs(rows) => spread(
                rows,
                members,
                |r| log_shard(r, shards),
                cluster,
                &mut touched,
            )
            .into_iter()
            .map(|r| (!r.is_empty()).then_some(Rows::Logs(r)))
            .collect(),
            Rows::Points(rows) => spread(
                rows,
                members,
                |r| point_shard(r, shards),
                cluster,
                &mut touched,
            )
            .into_iter()
            .map(|r| (!r.is_empty()).then_some(Rows::Points(r)))
            .collect(),
        };
        let touched = (0..shards).filter(|&s| touched[s as usize]).collect();
        (per_member, touched)
    }

    /// Pushes `rows` to another member; a member that cannot be reached counts as down.
    async fn push(&self, member: usize, tenant: &str, rows: &Rows) -> Result<usize, IngestError> {
        if !self.cluster.is_up(member) {
            return Err(IngestError::Replication("down".into()));
        }
        let payload = postcard::to_stdvec(rows)
            .map_err(|e| IngestError::Replication(format!("cannot encode rows: {e}")))?;
        let channel = self.channel(member)?;
        let mut client = ClusterIngestClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(PushRequest {
            tenant: tenant.to_string(),
            rows: payload,
        });
        request.set_timeout(PUSH_TIMEOUT);
        match client.push(request).await {
            Ok(response) => Ok(response.into_inner().stored as usize),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                Err(IngestError::LiveLimit(status.message().to_string()))
            }
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) {
                    self.cluster.mark_down(member, status.message());
                }
                Err(IngestError::Replication(status.message().to_string()))
            }
        }
    }

    fn channel(&self, member: usize) -> Result<Channel, IngestError> {
        self.cluster
            .channel(member)
            .map_err(IngestError::Replication)
    }
}

async fn local_push(local: &Ingester, tenant: &str, rows: Rows) -> Result<usize, IngestError> {
    let stored = match rows {
        Rows::Spans(rows) => local.push(tenant, rows).await?,
        Rows::Logs(rows) => local.push_logs(tenant, rows).await?,
        Rows::Points(rows) => local.push_points(tenant, rows).await?,
    };
    Ok(stored)
}

/// The receiving side of `ClusterIngest.Push`: rows another member sends for shards this node
/// holds, stored in this node's ingester as they are (never distributed again).
#[derive(Debug, Clone)]
pub struct PushService {
    ingester: Arc<Ingester>,
}

impl PushService {
    /// The gRPC service storing pushed rows into `ingester`.
    pub fn server(ingester: Arc<Ingester>) -> ClusterIngestServer<PushService> {
        ClusterIngestServer::new(PushService { ingester })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl ClusterIngest for PushService {
    async fn push(
        &self,
        request: tonic::Request<PushRequest>,
    ) -> Result<tonic::Response<PushResponse>, tonic::Status> {
        let request = request.into_inner();
        crate::tenant::resolve(Some(&request.tenant), true)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let rows: Rows = postcard::from_bytes(&request.rows)
            .map_err(|e| tonic::Status::invalid_argument(format!("undecodable rows: {e}")))?;
        let stored = local_push(&self.ingester, &request.tenant, rows).await?;
        Ok(tonic::Response::new(PushResponse {
            stored: stored as u64,
        }))
    }
}
