//! DataFusion tables over spanlake data: `spans` and `traces` for one tenant, each the union of
//! committed Parquet blocks and the ingester's live rows.
//!
//! Exactly-once visibility: a scan first snapshots the tenant's committed blocks, then asks the
//! live source for rows *excluding* those blocks. Rows of a block committed after the snapshot
//! are still live (the ingester keeps them for a grace period), rows of a block in the snapshot
//! come only from Parquet: no span is counted twice or missed while blocks flush.
//!
//! Filters are pushed down inexactly (DataFusion re-applies them): to Parquet as a pruning
//! predicate (statistics, page index, bloom filter on `trace_id`), to block selection as time
//! and trace-id ranges from `meta.json`, and to the live source as trace ids and a time range.

mod filters;
mod live_exec;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::TableProvider;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use crate::ingester::Selection;
use crate::schema::{TraceId, spans, traces};
use crate::storage::{Catalog, SPANS_FILE, Storage, TRACES_FILE};
pub use filters::ScanBounds;
pub use live_exec::{LiveExec, LiveExecCodec};

/// Which table a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Spans,
    Traces,
}

impl TableKind {
    /// The SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Spans => "spans",
            TableKind::Traces => "traces",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Spans => spans::schema(),
            TableKind::Traces => traces::schema(),
        }
    }

    fn file(self) -> &'static str {
        match self {
            TableKind::Spans => SPANS_FILE,
            TableKind::Traces => TRACES_FILE,
        }
    }

    fn trace_id_column(self) -> &'static str {
        match self {
            TableKind::Spans => spans::TRACE_ID,
            TableKind::Traces => traces::TRACE_ID,
        }
    }

    fn start_time_column(self) -> &'static str {
        match self {
            TableKind::Spans => spans::START_TIME,
            TableKind::Traces => traces::START_TIME,
        }
    }
}

/// A request for live rows: serialisable, so that it can travel to a remote ingester.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveScan {
    pub tenant: String,
    pub table: TableKind,
    /// Blocks the reader already reads from Parquet.
    pub exclude_blocks: Vec<String>,
    pub trace_ids: Option<Vec<TraceId>>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
}

impl LiveScan {
    /// The ingester-side selection this request asks for.
    pub fn selection(&self) -> Selection {
        Selection {
            exclude_blocks: self.exclude_blocks.iter().cloned().collect(),
            trace_ids: self
                .trace_ids
                .as_ref()
                .map(|ids| ids.iter().copied().collect()),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
        }
    }
}

impl From<&LiveScan> for crate::proto::LiveScan {
    fn from(scan: &LiveScan) -> Self {
        let table = match scan.table {
            TableKind::Spans => crate::proto::Table::Spans,
            TableKind::Traces => crate::proto::Table::Traces,
        };
        Self {
            tenant: scan.tenant.clone(),
            table: table as i32,
            exclude_blocks: scan.exclude_blocks.clone(),
            trace_ids: scan.trace_ids.as_ref().map(|ids| crate::proto::TraceIds {
                ids: ids.iter().map(|id| id.to_vec()).collect(),
            }),
            start_ns: scan.start_ns,
            end_ns: scan.end_ns,
        }
    }
}

impl TryFrom<crate::proto::LiveScan> for LiveScan {
    type Error = String;

    fn try_from(scan: crate::proto::LiveScan) -> Result<Self, String> {
        let table = match crate::proto::Table::try_from(scan.table) {
            Ok(crate::proto::Table::Spans) => TableKind::Spans,
            Ok(crate::proto::Table::Traces) => TableKind::Traces,
            Err(_) => return Err(format!("unknown live table {}", scan.table)),
        };
        let trace_ids = scan
            .trace_ids
            .map(|ids| {
                ids.ids
                    .iter()
                    .map(|id| {
                        TraceId::try_from(id.as_slice())
                            .map_err(|_| format!("a trace id must be 16 bytes, got {}", id.len()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            tenant: scan.tenant,
            table,
            exclude_blocks: scan.exclude_blocks,
            trace_ids,
            start_ns: scan.start_ns,
            end_ns: scan.end_ns,
        })
    }
}

/// Where live rows come from: the in-process ingester, later a remote one over Arrow Flight.
pub trait LiveSource: std::fmt::Debug + Send + Sync {
    /// Live rows of the requested table, in the table's full schema.
    fn scan(&self, request: &LiveScan) -> Result<Vec<RecordBatch>, arrow::error::ArrowError>;
}

/// `spans` or `traces` of one tenant.
#[derive(Debug)]
pub struct SpanlakeTable {
    kind: TableKind,
    tenant: String,
    catalog: Arc<Catalog>,
    live: Arc<dyn LiveSource>,
}

impl SpanlakeTable {
    /// A table of `kind` for `tenant`.
    pub fn new(
        kind: TableKind,
        tenant: &str,
        catalog: Arc<Catalog>,
        live: Arc<dyn LiveSource>,
    ) -> Self {
        Self {
            kind,
            tenant: tenant.to_string(),
            catalog,
            live,
        }
    }
}

#[async_trait]
impl TableProvider for SpanlakeTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
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
        let schema = self.kind.schema();
        let bounds = ScanBounds::from_filters(
            filters,
            self.kind.trace_id_column(),
            self.kind.start_time_column(),
        );
        // Listing blocks before asking for live rows is what makes the union exactly-once.
        let blocks = self.catalog.blocks(&self.tenant);
        let live = LiveExec::new(
            LiveScan {
                tenant: self.tenant.clone(),
                table: self.kind,
                exclude_blocks: blocks.iter().map(|b| b.block_id.clone()).collect(),
                trace_ids: bounds.trace_ids.clone(),
                start_ns: bounds.start_ns,
                end_ns: bounds.end_ns,
            },
            self.live.clone(),
            projection.cloned(),
        )?;
        let files: Vec<PartitionedFile> = blocks
            .iter()
            .filter(|b| bounds.admits_block(b))
            .map(|b| PartitionedFile::new_from_meta(b.file(self.kind.file())))
            .collect();
        if files.is_empty() {
            return Ok(Arc::new(live));
        }

        let mut source = ParquetSource::new(schema.clone())
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_pushdown_filters(true)
            .with_enable_page_index(true)
            .with_bloom_filter_on_read(true);
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions.min(files.len())];
        for (i, file) in files.into_iter().enumerate() {
            let n = groups.len();
            groups[i % n].push(file);
        }
        let config = FileScanConfigBuilder::new(Storage::object_store_url(), Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        let parquet: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        UnionExec::try_new(vec![parquet, Arc::new(live)])
    }
}
