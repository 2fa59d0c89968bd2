//! The distributor: in a cluster, any member accepts an export, sends each shard's rows to the
//! shard's holders over the internal `ClusterIngest.Push` call (this node's own share goes
//! straight to its ingester), and acknowledges only once enough holders of every shard the
//! export touches have made their rows durable ([`Cluster::write_quorum`]).
//!
//! A refused export may have reached some holders; the client's retry then stores those rows
//! twice, as any at-least-once OTLP pipeline may (compaction merges spans by span id).

use std::sync::Arc;

use futures::future::join_all;

use super::{IngestError, Rows};
use crate::cluster::Cluster;
use crate::cluster::handoff::{Hint, Mark};
use crate::ingester::{Ingester, log_shard, point_shard, shard_of};
use crate::proto::cluster_ingest_server::{ClusterIngest, ClusterIngestServer};
use crate::proto::{MarkRequest, MarkResponse, PushRequest, PushResponse};

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
    /// Holders that missed rows while the quorum held get them as hints ([`handoff`]).
    ///
    /// [`handoff`]: crate::cluster::handoff
    pub async fn distribute(
        &self,
        local: &Ingester,
        tenant: &str,
        rows: Rows,
    ) -> Result<usize, IngestError> {
        let count = rows.len();
        let (mut per_member, shards) = self.split(rows);
        let self_index = self.cluster.self_index();
        let own = per_member[self_index].take();
        let pushes = per_member
            .iter()
            .enumerate()
            .filter_map(|(member, rows)| rows.as_ref().map(|rows| (member, rows)))
            .map(|(member, rows)| async move { (member, self.push(member, tenant, rows).await) });
        let local = async {
            match own {
                Some(rows) => Some((self_index, local_push(local, tenant, rows).await)),
                None => None,
            }
        };
        let (outcomes, own) = futures::join!(join_all(pushes), local);
        let mut outcomes: Vec<(usize, Result<usize, IngestError>)> =
            outcomes.into_iter().chain(own).collect();
        let quorum = self.cluster.write_quorum();
        for &shard in &shards {
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
        // This member's own share failing is this write's failure, whatever the others did.
        let own_failure = outcomes
            .iter()
            .position(|(member, outcome)| *member == self_index && outcome.is_err());
        if let Some(at) = own_failure {
            return outcomes.swap_remove(at).1.map(|_| count);
        }
        let missed: Vec<usize> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_err())
            .map(|(member, _)| *member)
            .collect();
        if !missed.is_empty() {
            let stored: Vec<usize> = outcomes
                .iter()
                .filter(|(_, outcome)| outcome.is_ok())
                .map(|(member, _)| *member)
                .collect();
            self.hand_off(tenant, per_member, &missed, &stored, &shards)
                .await?;
        }
        Ok(count)
    }

    /// Keeps the rows the `missed` members should have stored as hints for them, and marks
    /// them as missing rows of their shards on every member that can be reached; the members
    /// in `stored` that hold those shards must record the marks, or the write fails.
    async fn hand_off(
        &self,
        tenant: &str,
        mut per_member: Vec<Option<Rows>>,
        missed: &[usize],
        stored: &[usize],
        shards: &[u32],
    ) -> Result<(), IngestError> {
        let self_index = self.cluster.self_index();
        let source = self.cluster.member(self_index).name.clone();
        let mut marks = Vec::new();
        for &member in missed {
            let Some(rows) = per_member[member].take() else {
                continue;
            };
            let target = self.cluster.member(member).name.clone();
            let hint = Hint {
                tenant: tenant.to_string(),
                rows: encode(&rows)?,
            };
            let cluster = self.cluster.clone();
            let kept = {
                let target = target.clone();
                tokio::task::spawn_blocking(move || cluster.handoff().keep(&target, &hint))
                    .await
                    .map_err(|e| IngestError::Replication(e.to_string()))?
            };
            let seq = kept.map_err(|e| {
                IngestError::Replication(format!("cannot keep a hint for {target}: {e}"))
            })?;
            let held: Vec<u32> = shards
                .iter()
                .copied()
                .filter(|&s| self.cluster.holders(s).contains(&member))
                .collect();
            marks.push(Mark {
                source: source.clone(),
                target,
                seq,
                shards: held,
            });
        }
        {
            let cluster = self.cluster.clone();
            let local = marks.clone();
            tokio::task::spawn_blocking(move || cluster.handoff().record(&local))
                .await
                .map_err(|e| IngestError::Replication(e.to_string()))?
                .map_err(|e| IngestError::Replication(format!("cannot record marks: {e}")))?;
        }
        let marked = |member: usize| {
            marks.iter().any(|m| {
                m.shards
                    .iter()
                    .any(|&s| self.cluster.holders(s).contains(&member))
            })
        };
        let sends = (0..self.cluster.len())
            .filter(|&m| m != self_index && !missed.contains(&m))
            .map(|member| {
                let marks = &marks;
                async move { (member, self.cluster.send_marks(member, marks).await) }
            });
        for (member, outcome) in join_all(sends).await {
            if let Err(e) = outcome {
                let name = &self.cluster.member(member).name;
                if stored.contains(&member) && marked(member) {
                    return Err(IngestError::Replication(format!(
                        "{name} stored rows but could not record which holders miss them: {e}"
                    )));
                }
                tracing::warn!(member = %name, error = %e, "marks not sent; it learns them with its next health check");
            }
        }
        Ok(())
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
        match self.cluster.push(member, tenant, encode(rows)?).await {
            Ok(stored) => Ok(stored as usize),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                Err(IngestError::LiveLimit(status.message().to_string()))
            }
            Err(status) => Err(IngestError::Replication(status.message().to_string())),
        }
    }
}

/// `rows` as `ClusterIngest.Push` carries them.
fn encode(rows: &Rows) -> Result<Vec<u8>, IngestError> {
    postcard::to_stdvec(rows)
        .map_err(|e| IngestError::Replication(format!("cannot encode rows: {e}")))
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
    cluster: Arc<Cluster>,
}

impl PushService {
    /// The gRPC service storing pushed rows into `ingester`, and marks into `cluster`'s
    /// handoff state.
    pub fn server(
        ingester: Arc<Ingester>,
        cluster: Arc<Cluster>,
    ) -> ClusterIngestServer<PushService> {
        ClusterIngestServer::new(PushService { ingester, cluster })
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

    async fn mark(
        &self,
        request: tonic::Request<MarkRequest>,
    ) -> Result<tonic::Response<MarkResponse>, tonic::Status> {
        let marks: Vec<Mark> = request
            .into_inner()
            .marks
            .into_iter()
            .map(Into::into)
            .collect();
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.handoff().record(&marks))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .map_err(|e| tonic::Status::internal(format!("cannot record marks: {e}")))?;
        Ok(tonic::Response::new(MarkResponse {}))
    }
}
