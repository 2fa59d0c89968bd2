//! `LiveExec`: the execution plan that reads an ingester's live rows.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use super::{LiveScan, LiveSource};

/// Reads live rows for one [`LiveScan`] from a [`LiveSource`], as a single partition.
#[derive(Debug)]
pub struct LiveExec {
    scan: LiveScan,
    projection: Option<Vec<usize>>,
    source: Arc<dyn LiveSource>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl LiveExec {
    /// A plan reading `scan` from `source`, keeping the columns in `projection`.
    pub fn new(
        scan: LiveScan,
        source: Arc<dyn LiveSource>,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let full = scan.table.schema();
        let schema = match &projection {
            Some(indices) => Arc::new(full.project(indices)?),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            scan,
            projection,
            source,
            schema,
            properties,
        })
    }

    /// The live request this plan makes.
    pub fn live_scan(&self) -> &LiveScan {
        &self.scan
    }
}

impl DisplayAs for LiveExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LiveExec: tenant={}, table={}, excluded_blocks={}",
            self.scan.tenant,
            self.scan.table.name(),
            self.scan.exclude_blocks.len()
        )?;
        if let Some(ids) = &self.scan.trace_ids {
            write!(f, ", trace_ids={}", ids.len())?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LiveExec {
    fn name(&self) -> &str {
        "LiveExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return exec_err!("LiveExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("LiveExec has one partition, asked for {partition}");
        }
        let (source, scan, projection) = (
            self.source.clone(),
            self.scan.clone(),
            self.projection.clone(),
        );
        let batches = async move {
            tokio::task::spawn_blocking(move || {
                let batches = source.scan(&scan)?;
                batches
                    .into_iter()
                    .map(|b| match &projection {
                        Some(indices) => b.project(indices),
                        None => Ok(b),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(DataFusionError::from)
        };
        let stream = futures::stream::once(batches);
        let stream = futures::StreamExt::flat_map(stream, |result| {
            let items: Vec<Result<_>> = match result {
                Ok(batches) => batches.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

#[derive(Serialize, Deserialize)]
struct EncodedLiveExec {
    scan: LiveScan,
    projection: Option<Vec<usize>>,
}

/// Encodes [`LiveExec`] nodes for shipping physical plans between nodes; decoding binds them
/// to the live source of the receiving node.
#[derive(Debug)]
pub struct LiveExecCodec {
    pub source: Arc<dyn LiveSource>,
}

impl PhysicalExtensionCodec for LiveExecCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return exec_err!("LiveExec has no inputs, got {}", inputs.len());
        }
        let encoded: EncodedLiveExec =
            serde_json::from_slice(buf).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Arc::new(LiveExec::new(
            encoded.scan,
            self.source.clone(),
            encoded.projection,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let any: &dyn std::any::Any = node.as_ref();
        let Some(live) = any.downcast_ref::<LiveExec>() else {
            return exec_err!("LiveExecCodec cannot encode {}", node.name());
        };
        let encoded = EncodedLiveExec {
            scan: live.scan.clone(),
            projection: live.projection.clone(),
        };
        serde_json::to_writer(buf, &encoded).map_err(|e| DataFusionError::External(Box::new(e)))
    }
}
