//! `LiveExec`: the execution plan that reads an ingester's live rows.

use std::fmt;
use std::sync::{Arc, Weak};

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use prost::Message;

use crate::live::{LivePin, LiveScan, LiveSource};
use crate::proto;

/// Reads live rows for one [`LiveScan`] from a [`LiveSource`], dealt over its partitions in
/// slices of at most the session's batch size, so that the operators above it run on every
/// core. The partitions of one execution (those run with the same [`TaskContext`]) share
/// one read of the source; another execution reads it again and sees newer rows.
#[derive(Debug)]
pub struct LiveExec {
    scan: LiveScan,
    projection: Option<Vec<usize>>,
    string_views: bool,
    partitions: usize,
    source: Arc<dyn LiveSource>,
    /// Taken before the blocks `scan` excludes were listed, and held as long as the plan.
    pin: Arc<dyn LivePin>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    shared: Arc<Mutex<Option<SharedRead>>>,
}

/// The rows an execution of a [`LiveExec`] read, until each of its partitions has taken
/// its share.
#[derive(Debug)]
struct SharedRead {
    /// The execution's context; the read belongs to it while it lives.
    context: Weak<TaskContext>,
    rows: ReadRows,
    /// Partitions that have not taken their share yet.
    waiting: Vec<bool>,
}

/// One read of the source, as it is run once and awaited by every partition.
type ReadRows = Shared<BoxFuture<'static, std::result::Result<Arc<Vec<RecordBatch>>, String>>>;

impl LiveExec {
    /// A plan reading `scan` from `source`, keeping the columns in `projection`, with
    /// top-level strings as Utf8View when `string_views`; `pin` is the source's pin taken
    /// before the blocks `scan` excludes were listed.
    /// Its rows are dealt over `partitions` (at least one).
    pub fn new(
        scan: LiveScan,
        source: Arc<dyn LiveSource>,
        pin: Arc<dyn LivePin>,
        projection: Option<Vec<usize>>,
        string_views: bool,
        partitions: usize,
    ) -> Result<Self> {
        let partitions = partitions.max(1);
        let full = table_schema(scan.table, string_views);
        let schema = match &projection {
            Some(indices) => Arc::new(full.project(indices)?),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            scan,
            projection,
            string_views,
            partitions,
            source,
            pin,
            schema,
            properties,
            shared: Arc::new(Mutex::new(None)),
        })
    }

    /// The read of the execution `context` belongs to, started by its first partition.
    fn read_for(&self, partition: usize, context: &Arc<TaskContext>) -> ReadRows {
        let mut shared = self.shared.lock();
        let current = shared.as_mut().filter(|read| {
            read.context
                .upgrade()
                .is_some_and(|c| Arc::ptr_eq(&c, context))
                && read.waiting[partition]
        });
        let read = match current {
            Some(read) => read,
            None => shared.insert(SharedRead {
                context: Arc::downgrade(context),
                rows: self.read().boxed().shared(),
                waiting: vec![true; self.partitions],
            }),
        };
        read.waiting[partition] = false;
        let rows = read.rows.clone();
        if read.waiting.iter().all(|w| !w) {
            *shared = None;
        }
        rows
    }

    /// Reads the source once, projected and cast to this plan's schema.
    fn read(
        &self,
    ) -> impl Future<Output = std::result::Result<Arc<Vec<RecordBatch>>, String>> + use<> {
        let (source, pin, scan, projection, schema) = (
            self.source.clone(),
            self.pin.clone(),
            self.scan.clone(),
            self.projection.clone(),
            self.schema.clone(),
        );
        let views = self.string_views;
        async move {
            tokio::task::spawn_blocking(move || {
                let batches = source.scan(&scan)?;
                // Checked after the read: rows released before it would be missing from it.
                if !pin.intact() {
                    return Err(ArrowError::ComputeError(
                        "the live rows of blocks committed since this query was planned \
                         were released (a plan keeps them for the ingester's flushed_grace); \
                         run the query again"
                            .into(),
                    ));
                }
                batches
                    .into_iter()
                    .map(|b| {
                        let b = match &projection {
                            Some(indices) => b.project(indices)?,
                            None => b,
                        };
                        if views { to_schema(b, &schema) } else { Ok(b) }
                    })
                    .collect::<Result<Vec<_>, ArrowError>>()
            })
            .await
            .map_err(|e| e.to_string())?
            .map(Arc::new)
            .map_err(|e| e.to_string())
        }
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
    leaf_plan_methods!("LiveExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions {
            return exec_err!(
                "LiveExec has {} partitions, asked for {partition}",
                self.partitions
            );
        }
        let rows = self.read_for(partition, &context);
        let (partitions, batch_size) = (self.partitions, context.session_config().batch_size());
        let stream = futures::stream::once(rows).flat_map(move |result| {
            let items: Vec<Result<RecordBatch>> = match result {
                Ok(batches) => deal(&batches, batch_size.max(1), partitions, partition)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Err(e) => vec![Err(DataFusionError::Execution(format!(
                    "reading live rows: {e}"
                )))],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// The share of `partition` (of `partitions`) of `batches` cut into slices of at most
/// `batch_size` rows: every `partitions`-th slice. Slices share the batches' buffers.
fn deal(
    batches: &[RecordBatch],
    batch_size: usize,
    partitions: usize,
    partition: usize,
) -> Vec<RecordBatch> {
    batches
        .iter()
        .flat_map(|batch| {
            (0..batch.num_rows())
                .step_by(batch_size)
                .map(move |start| batch.slice(start, batch_size.min(batch.num_rows() - start)))
        })
        .skip(partition)
        .step_by(partitions)
        .collect()
}

/// The schema of `table`, with its top-level string columns as Utf8View when `string_views`.
pub fn table_schema(table: crate::schema::TableKind, string_views: bool) -> SchemaRef {
    let schema = table.schema();
    if !string_views {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with each column cast to its type in `schema` (the same columns, some strings as
/// views).
fn to_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
}

/// Encodes [`LiveExec`] nodes (as `spanlake.v1.LiveExecNode`) for shipping physical plans
/// between nodes; decoding binds them to the live source of the receiving node.
#[derive(Debug)]
pub struct LiveExecCodec {
    pub source: Arc<dyn LiveSource>,
}

fn codec_error(message: String) -> DataFusionError {
    DataFusionError::Internal(message)
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
        let node = proto::LiveExecNode::decode(buf)
            .map_err(|e| codec_error(format!("LiveExec node: {e}")))?;
        let scan = node
            .scan
            .ok_or_else(|| codec_error("LiveExec node without a scan".into()))?;
        let scan = LiveScan::try_from(scan).map_err(codec_error)?;
        let projection = node
            .projection
            .map(|p| p.columns.into_iter().map(|c| c as usize).collect());
        // The blocks were listed on the encoding node: the pin covers what this node commits
        // from now on, and its flushed_grace what came before.
        Ok(Arc::new(LiveExec::new(
            scan,
            self.source.clone(),
            self.source.pin(),
            projection,
            node.string_views,
            node.partitions as usize,
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
        let message = proto::LiveExecNode {
            scan: Some(proto::LiveScan::from(&live.scan)),
            projection: live.projection.as_ref().map(|columns| proto::Projection {
                columns: columns.iter().map(|c| *c as u32).collect(),
            }),
            string_views: live.string_views,
            partitions: live.partitions as u32,
        };
        message
            .encode(buf)
            .map_err(|e| codec_error(format!("LiveExec node: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TableKind;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;

    #[derive(Debug)]
    struct NoRows;

    impl LiveSource for NoRows {
        fn scan(
            &self,
            _: &LiveScan,
        ) -> Result<Vec<arrow::array::RecordBatch>, arrow::error::ArrowError> {
            Ok(vec![])
        }

        fn pin(&self) -> Arc<dyn LivePin> {
            Arc::new(crate::live::AlwaysLive)
        }
    }

    #[test]
    fn live_exec_survives_encoding() {
        let scan = LiveScan {
            tenant: "acme".into(),
            table: TableKind::Traces,
            exclude_blocks: vec!["b1".into()],
            trace_ids: Some(vec![[3; 16]]),
            start_ns: Some(10),
            end_ns: None,
            shards: Some(vec![1, 3]),
        };
        let source: Arc<dyn LiveSource> = Arc::new(NoRows);
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            LiveExec::new(
                scan.clone(),
                source.clone(),
                source.pin(),
                Some(vec![0, 2]),
                false,
                2,
            )
            .unwrap(),
        );
        let codec = LiveExecCodec { source };
        let mut buf = Vec::new();
        codec
            .try_encode(plan, &mut buf, &DefaultPhysicalProtoConverter {})
            .unwrap();
        let ctx = SessionContext::new();
        let decoded = codec
            .try_decode(
                &buf,
                &[],
                &ctx.task_ctx(),
                &DefaultPhysicalProtoConverter {},
            )
            .unwrap();
        let any: &dyn std::any::Any = decoded.as_ref();
        let decoded = any.downcast_ref::<LiveExec>().unwrap();
        assert_eq!(decoded.live_scan(), &scan);
        assert_eq!(decoded.schema().fields().len(), 2);
        assert_eq!(decoded.properties().partitioning.partition_count(), 2);
    }

    /// Ten `traces` rows, counting how often it is read.
    #[derive(Debug, Default)]
    struct TenRows {
        reads: std::sync::atomic::AtomicUsize,
    }

    impl LiveSource for TenRows {
        fn scan(
            &self,
            _: &LiveScan,
        ) -> Result<Vec<arrow::array::RecordBatch>, arrow::error::ArrowError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let schema = TableKind::Traces.schema();
            let columns = schema
                .fields()
                .iter()
                .map(|f| arrow::array::new_null_array(f.data_type(), 10))
                .collect();
            let options = RecordBatchOptions::new().with_row_count(Some(10));
            Ok(vec![RecordBatch::try_new_with_options(
                Arc::new(Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect::<Vec<_>>(),
                )),
                columns,
                &options,
            )?])
        }

        fn pin(&self) -> Arc<dyn LivePin> {
            Arc::new(crate::live::AlwaysLive)
        }
    }

    #[tokio::test]
    async fn partitions_of_one_execution_share_one_read_and_deal_its_slices() {
        let scan = LiveScan {
            tenant: "acme".into(),
            table: TableKind::Traces,
            exclude_blocks: vec![],
            trace_ids: None,
            start_ns: None,
            end_ns: None,
            shards: None,
        };
        let source = Arc::new(TenRows::default());
        let plan =
            LiveExec::new(scan, source.clone(), source.pin(), Some(vec![0]), false, 2).unwrap();
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_batch_size(3),
        );
        let rows_of = |batches: Vec<RecordBatch>| -> Vec<usize> {
            batches.iter().map(RecordBatch::num_rows).collect()
        };
        let task = ctx.task_ctx();
        let first = plan.execute(0, task.clone()).unwrap();
        let second = plan.execute(1, task.clone()).unwrap();
        let first: Vec<RecordBatch> = first.map(|b| b.unwrap()).collect().await;
        let second: Vec<RecordBatch> = second.map(|b| b.unwrap()).collect().await;
        assert_eq!(rows_of(first), [3, 3]);
        assert_eq!(rows_of(second), [3, 1]);
        let reads = || source.reads.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reads(), 1);

        // Another execution reads the rows again.
        let again: Vec<RecordBatch> = plan
            .execute(0, ctx.task_ctx())
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
            .await;
        assert_eq!(rows_of(again), [3, 3]);
        assert_eq!(reads(), 2);
        assert!(plan.execute(2, ctx.task_ctx()).is_err());
    }
}
