//! Queries across a cluster, executed by datafusion-distributed.
//!
//! In a cluster, a session's tables are [`ShardedTable`]s: their scans read each shard from
//! one holder. The session plans as on one node; then the distributed planner cuts the
//! physical plan into stages at its exchanges and runs the stages' tasks on the members
//! (every member runs a datafusion-distributed worker on its cluster port). A scan's groups of
//! shards become the tasks of its stage, each routed to the member that reads the group, so
//! blocks and live rows are read where they are and only partial results cross the network;
//! aggregates run partially on the members and finally here (sketch states merge exactly).
//!
//! A shard none of whose holders is up is left out and recorded in the query's
//! [`PartialShards`]; edges open a record with [`recording_partial_shards`] and flag the
//! answer, or ask for strictness and get an error naming the shards instead.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableProvider;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec,
    RouteTasksEvent, RouteTasksEventResponse, ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
    SessionStateBuilderExt, Worker, WorkerQueryContext, WorkerResolver, display_plan_ascii,
};
use url::Url;

use super::{QueryEngine, Result};
use crate::cluster::Cluster;
use crate::schema::TableKind;
use crate::tables::{
    LocalShards, PartialShards, ShardReader, ShardReaders, ShardScan, ShardScanCodec,
    ShardScanExec, ShardedTable, SpanlakeTable,
};

tokio::task_local! {
    /// The partial-shards record of the request being served.
    static PARTIAL: Arc<PartialShards>;
}

/// Runs `work` with `record` as the partial-shards record of the sessions it opens. Sessions
/// opened outside such a scope are strict: a missing shard fails the query.
pub async fn recording_partial_shards<F: Future>(record: Arc<PartialShards>, work: F) -> F::Output {
    PARTIAL.scope(record, work).await
}

/// The shards the current request's scans left out so far (none outside a record's scope).
pub fn missing_shards() -> Vec<u32> {
    PARTIAL.try_with(|p| p.missing()).unwrap_or_default()
}

/// The record of the current request, or a strict one.
pub(super) fn current_partial_record() -> Arc<PartialShards> {
    PARTIAL
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::new(PartialShards::new(true)))
}

/// What an engine needs to plan and serve queries as a cluster member.
#[derive(Clone)]
pub(super) struct ClusterQueries {
    cluster: Arc<Cluster>,
    reader: Arc<dyn ShardReader>,
    worker: Worker,
    /// What shard scan tickets are decoded with: spanlake's functions, which their filters
    /// may call.
    ticket_ctx: Arc<TaskContext>,
}

/// The URL of a member's worker.
fn worker_url(cluster: &Cluster, member: usize) -> DfResult<Url> {
    let address = &cluster.member(member).internal;
    Url::parse(&format!("http://{address}"))
        .map_err(|e| DataFusionError::Plan(format!("member address {address}: {e}")))
}

/// The workers of the members that are up.
#[derive(Debug)]
struct MemberWorkers(Arc<Cluster>);

impl WorkerResolver for MemberWorkers {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        (0..self.0.len())
            .filter(|&m| self.0.is_up(m))
            .map(|m| worker_url(&self.0, m))
            .collect()
    }
}

fn shard_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&ShardScanExec> {
    let any: &dyn std::any::Any = plan.as_ref();
    any.downcast_ref::<ShardScanExec>()
}

/// A scan wants one task per group of shards.
fn desired_tasks(ev: DesiredTaskCountEvent<'_>) -> Option<DfResult<DesiredTaskCountEventResponse>> {
    let scan = shard_scan(ev.plan)?;
    Some(Ok(DesiredTaskCountEventResponse::desired(
        scan.groups().len().max(1),
    )))
}

/// A scan in `n` tasks: task `i` reads groups `i`, `i + n`, ….
fn scale_up(ev: ScaleUpLeafNodeEvent<'_>) -> Option<DfResult<ScaleUpLeafNodeEventResponse>> {
    let scan = shard_scan(ev.plan)?;
    if ev.task_count <= 1 {
        return Some(Ok(ScaleUpLeafNodeEventResponse::new(ev.plan.clone())));
    }
    Some(
        scan.split(ev.task_count)
            .and_then(|variants| DistributedLeafExec::try_new(ev.plan.clone(), variants))
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// Routes each task of a scan's stage to the member reading its (first) group of shards.
#[derive(Debug)]
struct RouteToReaders(Arc<Cluster>);

impl datafusion_distributed::RouteTasksHandler for RouteToReaders {
    fn handle(&self, ev: RouteTasksEvent<'_>) -> Option<DfResult<RouteTasksEventResponse>> {
        let mut routed = None;
        let walked = ev.plan.apply(|node| {
            let any: &dyn std::any::Any = node.as_ref();
            let Some(leaf) = any.downcast_ref::<DistributedLeafExec>() else {
                return Ok(TreeNodeRecursion::Continue);
            };
            if shard_scan(leaf.original()).is_none() {
                return Ok(TreeNodeRecursion::Continue);
            }
            let urls: DfResult<Vec<Url>> = leaf
                .variants()
                .iter()
                .map(|variant| {
                    let member = shard_scan(variant)
                        .and_then(|s| s.groups().first())
                        .map_or(self.0.self_index(), |g| g.member);
                    worker_url(&self.0, member)
                })
                .collect();
            routed = Some(urls);
            Ok(TreeNodeRecursion::Stop)
        });
        if let Err(e) = walked {
            return Some(Err(e));
        }
        let urls = routed?;
        Some(urls.and_then(|urls| {
            if urls.len() == ev.task_count {
                Ok(RouteTasksEventResponse::new(urls))
            } else {
                Err(DataFusionError::Plan(format!(
                    "{} tasks for {} groups of shards",
                    ev.task_count,
                    urls.len()
                )))
            }
        }))
    }
}

impl std::fmt::Debug for ClusterQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterQueries")
            .field("cluster", &self.cluster)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl ClusterQueries {
    pub(super) fn new(cluster: Arc<Cluster>, reader: Arc<dyn ShardReader>) -> Self {
        let worker_reader = reader.clone();
        let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
            let reader = worker_reader.clone();
            async move {
                let mut state = ctx
                    .builder
                    .with_distributed_user_codec(ShardScanCodec)
                    .build();
                state
                    .config_mut()
                    .set_extension(Arc::new(ShardReaders(reader)));
                let ctx = SessionContext::new_with_state(state);
                spanlake_udfs::register_all(&ctx);
                Ok(ctx.state())
            }
        });
        let functions = SessionContext::new();
        spanlake_udfs::register_all(&functions);
        Self {
            cluster,
            reader,
            worker,
            ticket_ctx: functions.task_ctx(),
        }
    }

    /// `state` planning distributed over the cluster's members.
    pub(super) fn distribute(&self, state: SessionState) -> Result<SessionState> {
        let self_url = worker_url(&self.cluster, self.cluster.self_index())?;
        let mut state = SessionStateBuilder::new_from_existing(state)
            .with_distributed_worker_resolver(MemberWorkers(self.cluster.clone()))
            .with_distributed_planner()
            .with_distributed_user_codec(ShardScanCodec)
            .with_distributed_desired_task_count_handler(desired_tasks)
            .with_distributed_scale_up_leaf_node_handler(scale_up)
            .with_distributed_route_tasks_handler(RouteToReaders(self.cluster.clone()))
            .with_distributed_local_worker_context(self.worker.to_local_worker_context(self_url))
            .build();
        state
            .config_mut()
            .set_extension(Arc::new(ShardReaders(self.reader.clone())));
        Ok(state)
    }

    /// The tables of `tenant`, read across the cluster.
    pub(super) fn tables(
        &self,
        tenant: &str,
        analytic: bool,
    ) -> Vec<(&'static str, Arc<dyn TableProvider>)> {
        TableKind::ALL
            .into_iter()
            .map(|kind| {
                let table = ShardedTable::new(kind, tenant, self.cluster.clone(), analytic);
                (kind.name(), Arc::new(table) as Arc<dyn TableProvider>)
            })
            .collect()
    }

    /// The worker that runs other members' query stages here.
    pub(super) fn worker(&self) -> &Worker {
        &self.worker
    }
}

impl QueryEngine {
    /// The same engine as a member of `cluster`: its sessions read every table across the
    /// cluster, through `reader` for the shards of other members.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>, reader: Arc<dyn ShardReader>) -> Self {
        self.cluster = Some(ClusterQueries::new(cluster, reader));
        // Sessions cached so far read this node alone.
        self.states = Default::default();
        self
    }

    /// The shards of this node's cluster that no member up holds (none outside a cluster).
    pub fn unreadable_shards(&self) -> Vec<u32> {
        self.cluster
            .as_ref()
            .map(|c| c.cluster.unreadable_shards())
            .unwrap_or_default()
    }

    /// The datafusion-distributed worker to serve on the cluster port, for a cluster member.
    pub fn cluster_worker(&self) -> Option<Worker> {
        self.cluster.as_ref().map(|c| c.worker().clone())
    }

    /// The plan reading `scan` over `shards` from this node's own blocks and live rows, and
    /// the context to execute it in: what a member answers for the shards it reads.
    pub async fn plan_local_shards(&self, scan: &ShardScan, shards: &[u32]) -> Result<LocalShards> {
        let mut table = SpanlakeTable::new(
            scan.table,
            &scan.tenant,
            self.catalog.clone(),
            self.live.clone(),
        )
        .with_shards(shards.to_vec())
        .with_block_cache(self.block_cache.clone());
        if scan.string_views {
            table = table.analytic();
        }
        let mut config = SessionConfig::new();
        if let Some(n) = self.partitions {
            config = config.with_target_partitions(n);
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime(&scan.tenant)?)
            .with_default_features()
            .build();
        let plan = table
            .scan(&state, scan.projection.as_ref(), &scan.filters, scan.limit)
            .await?;
        Ok((plan, state.task_ctx()))
    }

    /// Reads a shard scan ticket (a `spanlake.v1.ShardScanTicket`) sent by another member:
    /// the scan and the shards to read.
    pub fn shard_ticket(&self, ticket: &[u8]) -> Result<(ShardScan, Vec<u32>)> {
        use prost::Message;
        let ticket = crate::proto::ShardScanTicket::decode(ticket)
            .map_err(|e| super::QueryError::bad_request(format!("not a shard scan ticket: {e}")))?;
        let node = ticket
            .scan
            .ok_or_else(|| super::QueryError::bad_request("shard scan ticket without a scan"))?;
        let cluster = self.cluster.as_ref().ok_or_else(|| {
            super::QueryError::bad_request("shard scan tickets are for cluster members")
        })?;
        let (scan, _, _) = ShardScan::from_proto(node, &cluster.ticket_ctx)?;
        Ok((scan, ticket.shards))
    }
}

/// `frame` itself, or — for a plain `EXPLAIN` — its rows plus a `distributed_plan` row: the
/// stages the distributed planner cuts the plan into and the tasks of each, which DataFusion's
/// own `EXPLAIN` (planned before distribution) does not show.
pub(super) async fn with_distributed_explain(
    ctx: &SessionContext,
    frame: DataFrame,
) -> Result<DataFrame> {
    let LogicalPlan::Explain(explain) = frame.logical_plan() else {
        return Ok(frame);
    };
    let plan = ctx.state().create_physical_plan(&explain.plan).await?;
    let stages = display_plan_ascii(plan.as_ref(), false);
    let schema = frame.schema().inner().clone();
    let mut batches = frame.collect().await?;
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let text = if i == 0 {
                "distributed_plan"
            } else {
                stages.as_str()
            };
            Arc::new(StringArray::from(vec![text])) as ArrayRef
        })
        .collect();
    batches.push(RecordBatch::try_new(schema, columns)?);
    Ok(ctx.read_batches(batches)?)
}
