//! Reading a table across a cluster.
//!
//! [`ShardedTable`] is a tenant's table as a cluster member plans it: each shard is read from
//! exactly one of its holders, the first that is up ([`Cluster::reader`]), so replicas never
//! count twice. Its scan is a [`ShardScanExec`]: the scan's projection, filters and limit plus
//! the groups of shards each member reads. Executed on a member, a group of that member's is
//! read from its own blocks and live rows (a [`SpanlakeTable`](super::SpanlakeTable) restricted
//! to those shards); a group of another member's is fetched from it over the network. Which
//! member runs which group is the distributed planner's choice; the answer is the same.
//!
//! Shards none of whose holders is up are left out, and the scan records them in the
//! session's [`PartialShards`] so that the edge can flag the answer as partial — or, when the
//! session asks for complete answers, planning fails naming them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;

use super::ScanBounds;
use crate::cluster::Cluster;
use crate::ingester::shard_of;
use crate::live::{table_from_proto, table_to_proto};
use crate::proto;
use crate::schema::TableKind;

/// What a shard scan reads of a table, whichever shards it reads.
#[derive(Debug, Clone)]
pub struct ShardScan {
    pub table: TableKind,
    pub tenant: String,
    /// Top-level strings as Utf8View (the SQL sessions' tables).
    pub string_views: bool,
    pub projection: Option<Vec<usize>>,
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
}

/// Shards one member reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGroup {
    pub member: usize,
    pub shards: Vec<u32>,
}

/// A plan reading a member's own shards, and the context to execute it in.
pub type LocalShards = (Arc<dyn ExecutionPlan>, Arc<TaskContext>);

/// How a member reads shards: its own from its blocks and live rows, another member's from
/// that member.
pub trait ShardReader: fmt::Debug + Send + Sync {
    /// This member's index in the cluster.
    fn self_index(&self) -> usize;

    /// The plan reading `scan` over `shards` from this member's blocks and live rows, and the
    /// context to execute it in. Its partitions together read one snapshot (blocks listed,
    /// live rows excluding them), so every partition of a scan must come from one plan.
    fn plan_local(
        &self,
        scan: &ShardScan,
        shards: &[u32],
    ) -> BoxFuture<'static, Result<LocalShards>>;

    /// Every row of `scan` over `shards` that `member` holds, read there in one snapshot.
    fn read_remote(
        &self,
        member: usize,
        scan: &ShardScan,
        shards: &[u32],
    ) -> BoxFuture<'static, Result<SendableRecordBatchStream>>;
}

/// Every partition of `plan`, executed in `task` and merged into one stream: partitions
/// `first`, `first + step`, ….
pub fn execute_partitions(
    plan: &Arc<dyn ExecutionPlan>,
    task: &Arc<TaskContext>,
    first: usize,
    step: usize,
) -> Result<SendableRecordBatchStream> {
    let count = plan.properties().output_partitioning().partition_count();
    let streams = (first..count)
        .step_by(step.max(1))
        .map(|p| plan.execute(p, task.clone()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        plan.schema(),
        futures::stream::select_all(streams),
    )))
}

/// The session config extension that carries a member's [`ShardReader`] to the scans it
/// executes.
#[derive(Debug, Clone)]
pub struct ShardReaders(pub Arc<dyn ShardReader>);

/// The session config extension where a query's scans record the shards they could not read.
#[derive(Debug, Default)]
pub struct PartialShards {
    missing: Mutex<std::collections::BTreeSet<u32>>,
    /// Fail instead of leaving shards out.
    pub strict: bool,
}

impl PartialShards {
    /// A record for one query; `strict` makes scans fail rather than leave shards out.
    pub fn new(strict: bool) -> Self {
        Self {
            missing: Mutex::default(),
            strict,
        }
    }

    /// The shards left out so far.
    pub fn missing(&self) -> Vec<u32> {
        self.missing.lock().iter().copied().collect()
    }
}

/// Shards that could not be read: none of their holders is up, or the one read failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShardsUnavailable(pub String);

impl ShardsUnavailable {
    /// The error as DataFusion carries it.
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

/// A tenant's table read across the cluster, one holder per shard.
#[derive(Debug)]
pub struct ShardedTable {
    table: TableKind,
    tenant: String,
    string_views: bool,
    schema: SchemaRef,
    cluster: Arc<Cluster>,
}

impl ShardedTable {
    /// `table` of `tenant` over `cluster`; with `string_views`, as SQL sessions read it.
    pub fn new(table: TableKind, tenant: &str, cluster: Arc<Cluster>, string_views: bool) -> Self {
        Self {
            table,
            tenant: tenant.to_string(),
            string_views,
            schema: super::live_exec::table_schema(table, string_views),
            cluster,
        }
    }

    /// The shards a scan with `bounds` must read: those of the traces it names, or all.
    fn shards_for(&self, bounds: &ScanBounds) -> Vec<u32> {
        let count = self.cluster.ring().shards();
        let traced = matches!(
            self.table,
            TableKind::Spans | TableKind::Traces | TableKind::Logs
        );
        match &bounds.trace_ids {
            Some(ids) if traced => {
                // A log record with a trace id lives on its trace's shard.
                let mut shards: Vec<u32> = ids.iter().map(|id| shard_of(id, count)).collect();
                shards.sort_unstable();
                shards.dedup();
                shards
            }
            _ => (0..count).collect(),
        }
    }
}

#[async_trait]
impl TableProvider for ShardedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bounds = ScanBounds::from_filters(filters, self.table);
        let mut by_member: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        let mut missing = Vec::new();
        for shard in self.shards_for(&bounds) {
            match self.cluster.reader(shard) {
                Some(member) => by_member.entry(member).or_default().push(shard),
                None => missing.push(shard),
            }
        }
        if !missing.is_empty() {
            let record = state.config().get_extension::<PartialShards>();
            if record.as_ref().is_none_or(|r| r.strict) {
                return Err(ShardsUnavailable(format!(
                    "shards {missing:?} of the {} table have no holder up (holders: {}); \
                     retry when a holder is back, or accept a partial answer",
                    self.table.name(),
                    self.holder_names(&missing)
                ))
                .into_datafusion());
            }
            if let Some(record) = record {
                record.missing.lock().extend(missing);
            }
        }
        let groups = by_member
            .into_iter()
            .map(|(member, shards)| ShardGroup { member, shards })
            .collect();
        let scan = ShardScan {
            table: self.table,
            tenant: self.tenant.clone(),
            string_views: self.string_views,
            projection: projection.cloned(),
            filters: filters.to_vec(),
            limit,
        };
        let partitions = state.config().target_partitions().max(1);
        Ok(Arc::new(ShardScanExec::new(scan, groups, partitions)?))
    }
}

impl ShardedTable {
    fn holder_names(&self, shards: &[u32]) -> String {
        let mut names: Vec<&str> = shards
            .iter()
            .flat_map(|&s| self.cluster.holders(s))
            .map(|&m| self.cluster.member(m).name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }
}

/// The schema of what `scan` answers: its table's, projected.
pub fn shard_scan_schema(scan: &ShardScan) -> Result<SchemaRef> {
    let full = super::live_exec::table_schema(scan.table, scan.string_views);
    Ok(match &scan.projection {
        Some(indices) => Arc::new(full.project(indices)?),
        None => full,
    })
}

/// Scans shards of a table, each group of shards through the member that reads it.
///
/// A group this member reads is planned once, on the first partition that needs it, and its
/// plan's partitions are spread over the scan's; a group of another member's is fetched whole
/// by one partition. Either way each group is read in one snapshot.
#[derive(Debug)]
pub struct ShardScanExec {
    scan: ShardScan,
    groups: Vec<ShardGroup>,
    partitions: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// The local plan of each group, once made.
    local_plans: Arc<Vec<LocalPlan>>,
}

type LocalPlan = tokio::sync::OnceCell<LocalShards>;

impl ShardScanExec {
    /// A scan of `groups` in `partitions` output partitions.
    pub fn new(scan: ShardScan, groups: Vec<ShardGroup>, partitions: usize) -> Result<Self> {
        let schema = shard_scan_schema(&scan)?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let local_plans = Arc::new(groups.iter().map(|_| LocalPlan::new()).collect());
        Ok(Self {
            scan,
            groups,
            partitions: partitions.max(1),
            schema,
            properties,
            local_plans,
        })
    }

    /// The groups of shards and who reads them.
    pub fn groups(&self) -> &[ShardGroup] {
        &self.groups
    }

    /// What the scan reads.
    pub fn scan(&self) -> &ShardScan {
        &self.scan
    }

    /// The same scan split for `tasks` tasks: task `i` reads groups `i`, `i + tasks`, ….
    pub fn split(&self, tasks: usize) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
        let tasks = tasks.max(1);
        (0..tasks)
            .map(|task| {
                let groups = self
                    .groups
                    .iter()
                    .skip(task)
                    .step_by(tasks)
                    .cloned()
                    .collect();
                Ok(Arc::new(ShardScanExec::new(
                    self.scan.clone(),
                    groups,
                    self.partitions,
                )?) as Arc<dyn ExecutionPlan>)
            })
            .collect()
    }
}

impl DisplayAs for ShardScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShardScanExec: tenant={}, table={}, groups=[",
            self.scan.tenant,
            self.scan.table.name()
        )?;
        for (i, group) in self.groups.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(
                f,
                "{sep}member {}: {} shards",
                group.member,
                group.shards.len()
            )?;
        }
        write!(f, "]")?;
        if !self.scan.filters.is_empty() {
            let filters: Vec<String> = self.scan.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", filters=[{}]", filters.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShardScanExec {
    leaf_plan_methods!("ShardScanExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(readers) = context.session_config().get_extension::<ShardReaders>() else {
            return exec_err!("ShardScanExec runs only on a cluster member");
        };
        let reader = readers.0.clone();
        let partitions = self.partitions;
        let reads: Vec<BoxFuture<'static, Result<SendableRecordBatchStream>>> =
            self.groups
                .iter()
                .enumerate()
                .filter_map(|(index, group)| {
                    let (reader, scan) = (reader.clone(), self.scan.clone());
                    let shards = group.shards.clone();
                    if group.member == reader.self_index() {
                        let plans = self.local_plans.clone();
                        Some(Box::pin(async move {
                            let (plan, task) = plans[index]
                                .get_or_try_init(|| reader.plan_local(&scan, &shards))
                                .await?;
                            execute_partitions(plan, task, partition, partitions)
                        }) as BoxFuture<'static, _>)
                    } else if index % partitions == partition {
                        let member = group.member;
                        Some(Box::pin(
                            async move { reader.read_remote(member, &scan, &shards).await },
                        ) as BoxFuture<'static, _>)
                    } else {
                        None
                    }
                })
                .collect();
        let concurrency = reads.len().max(1);
        let stream = futures::stream::iter(reads)
            .buffered(concurrency)
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

fn codec_error(message: String) -> DataFusionError {
    DataFusionError::Internal(message)
}

impl ShardScan {
    /// The protobuf form of the scan with `groups`, in `partitions` partitions.
    pub fn to_proto(
        &self,
        groups: &[ShardGroup],
        partitions: usize,
    ) -> Result<proto::ShardScanNode> {
        let filters = datafusion_proto::logical_plan::to_proto::serialize_exprs(
            &self.filters,
            &DefaultLogicalExtensionCodec {},
        )
        .map_err(|e| codec_error(format!("shard scan filters: {e}")))?;
        Ok(proto::ShardScanNode {
            table: table_to_proto(self.table) as i32,
            tenant: self.tenant.clone(),
            string_views: self.string_views,
            projection: self.projection.as_ref().map(|columns| proto::Projection {
                columns: columns.iter().map(|c| *c as u32).collect(),
            }),
            filters: datafusion_proto::protobuf::LogicalExprNodeCollection {
                logical_expr_nodes: filters,
            }
            .encode_to_vec(),
            limit: self.limit.map(|l| l as u64),
            groups: groups
                .iter()
                .map(|g| proto::ShardGroup {
                    member: g.member as u32,
                    shards: g.shards.clone(),
                })
                .collect(),
            partitions: partitions as u32,
        })
    }

    /// The scan, its groups and partitions from their protobuf form; functions the filters
    /// call are looked up in `ctx`.
    pub fn from_proto(
        node: proto::ShardScanNode,
        ctx: &TaskContext,
    ) -> Result<(ShardScan, Vec<ShardGroup>, usize)> {
        let table = table_from_proto(node.table).map_err(codec_error)?;
        let filters =
            datafusion_proto::protobuf::LogicalExprNodeCollection::decode(node.filters.as_slice())
                .map_err(|e| codec_error(format!("shard scan filters: {e}")))?;
        let filters = datafusion_proto::logical_plan::from_proto::parse_exprs(
            &filters.logical_expr_nodes,
            ctx,
            &DefaultLogicalExtensionCodec {},
        )?;
        let scan = ShardScan {
            table,
            tenant: node.tenant,
            string_views: node.string_views,
            projection: node
                .projection
                .map(|p| p.columns.into_iter().map(|c| c as usize).collect()),
            filters,
            limit: node.limit.map(|l| l as usize),
        };
        let groups = node
            .groups
            .into_iter()
            .map(|g| ShardGroup {
                member: g.member as usize,
                shards: g.shards,
            })
            .collect();
        Ok((scan, groups, node.partitions.max(1) as usize))
    }
}

/// Encodes [`ShardScanExec`] nodes (as `spanlake.v1.ShardScanNode`) for the distributed
/// planner to ship query stages to other members.
#[derive(Debug, Default)]
pub struct ShardScanCodec;

impl PhysicalExtensionCodec for ShardScanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return exec_err!("ShardScanExec has no inputs, got {}", inputs.len());
        }
        let node = proto::ShardScanNode::decode(buf)
            .map_err(|e| codec_error(format!("ShardScanExec node: {e}")))?;
        let (scan, groups, partitions) = ShardScan::from_proto(node, ctx)?;
        Ok(Arc::new(ShardScanExec::new(scan, groups, partitions)?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let any: &dyn std::any::Any = node.as_ref();
        let Some(scan) = any.downcast_ref::<ShardScanExec>() else {
            return exec_err!("ShardScanCodec cannot encode {}", node.name());
        };
        scan.scan
            .to_proto(&scan.groups, scan.partitions)?
            .encode(buf)
            .map_err(|e| codec_error(format!("ShardScanExec node: {e}")))
    }
}
