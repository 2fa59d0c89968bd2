//! DataFusion tables over spanlake data: `spans`, `traces`, `logs` and `metrics` for one
//! tenant, each the union of committed Parquet blocks and the ingester's live rows.
//!
//! Exactly-once visibility: a scan first snapshots the tenant's committed blocks, then asks the
//! live source for rows *excluding* those blocks. Rows of a block committed after the snapshot
//! are still live (a pin taken before the listing keeps them), rows of a block in the snapshot
//! come only from Parquet: no span is counted twice or missed while blocks flush.
//!
//! Filters are pushed down inexactly (DataFusion re-applies them): to Parquet as a pruning
//! predicate (statistics, page index, bloom filter on `trace_id`), to block selection as time
//! and trace-id ranges and names from `meta.json`, and to the live source as trace ids and a
//! time range.
//!
//! Live rows come through the [`crate::live`] contract, never from the ingester directly, so
//! the same tables read an in-process or a remote ingester.

/// The methods every leaf execution plan of these tables writes alike, inside its
/// `impl ExecutionPlan`: its name, its `properties` field, no children, no expressions, and
/// `with_new_children` refusing children.
macro_rules! leaf_plan_methods {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }

        fn properties(&self) -> &Arc<PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            vec![]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: Arc<Self>,
            children: Vec<Arc<dyn ExecutionPlan>>,
        ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
            if !children.is_empty() {
                return datafusion::common::exec_err!(concat!($name, " has no children"));
            }
            Ok(self)
        }
    };
}

mod block_cache;
mod filters;
mod live_exec;
mod shard_scan;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::TableProvider;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use crate::live::{LiveScan, LiveSource};
use crate::schema::TableKind;
use crate::storage::{Catalog, DATA_FILE, Storage, TRACES_FILE};
pub use block_cache::{BlockCache, BlockCacheExec};
pub use filters::ScanBounds;
pub use live_exec::{LiveExec, LiveExecCodec};
pub use shard_scan::{
    LocalShards, PartialShards, ShardGroup, ShardReader, ShardReaders, ShardScan, ShardScanCodec,
    ShardScanExec, ShardedTable, ShardsUnavailable, execute_partitions, shard_scan_schema,
};

/// The Parquet file of a block that holds `kind`'s rows.
fn file_of(kind: TableKind) -> &'static str {
    match kind {
        TableKind::Traces => TRACES_FILE,
        TableKind::Spans | TableKind::Logs | TableKind::Metrics => DATA_FILE,
    }
}

/// One of a tenant's tables.
#[derive(Debug)]
pub struct SpanlakeTable {
    kind: TableKind,
    tenant: String,
    catalog: Arc<Catalog>,
    live: Arc<dyn LiveSource>,
    analytic: bool,
    schema: SchemaRef,
    /// Only these shards' rows, when given.
    shards: Option<Vec<u32>>,
    /// Decoded block columns kept for search scans, when there is a budget for them.
    block_cache: Option<Arc<BlockCache>>,
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
            analytic: false,
            schema: kind.schema(),
            shards: None,
            block_cache: None,
        }
    }

    /// The same table reading blocks through `cache` where that serves (see
    /// [`reads_through_cache`]).
    pub fn with_block_cache(mut self, cache: Option<Arc<BlockCache>>) -> Self {
        self.block_cache = cache;
        self
    }

    /// The same table restricted to the rows of `shards`: the part a cluster member reads.
    pub fn with_shards(mut self, shards: Vec<u32>) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The same table as SQL sessions read it: top-level strings as Utf8View (Parquet
    /// dictionaries decode to views without copying each value, and short strings group and
    /// compare inline), and rows filtered while decoding only by trace id.
    pub fn analytic(mut self) -> Self {
        self.analytic = true;
        self.schema = live_exec::table_schema(self.kind, true);
        self
    }
}

/// Whether a scan filters rows while decoding Parquet, before reading the other columns. That
/// pays where matching rows are few or together — a trace's rows are contiguous in its block,
/// and a search's predicates are meant to be selective — and costs where they are many and
/// scattered, as in an analyst's `WHERE kind = 'server'`, which then filters after decoding.
fn filters_while_decoding(analytic: bool, bounds: &ScanBounds) -> bool {
    !analytic || bounds.trace_ids.is_some()
}

/// Whether a scan reads `file` through the block cache instead of decoding its pages. Only
/// search scans (not the analytic sessions' string views) of spans and traces do, whose
/// blocks are sorted by trace id; a lookup of one trace does only for files the cache holds
/// already, so that a lookup in a cold block reads that trace's pages alone.
fn reads_through_cache(
    cache: &BlockCache,
    kind: TableKind,
    analytic: bool,
    bounds: &ScanBounds,
    file: &object_store::ObjectMeta,
) -> bool {
    !analytic
        && matches!(kind, TableKind::Spans | TableKind::Traces)
        && (bounds.trace_ids.as_ref().is_none_or(|ids| ids.len() > 1)
            || cache.is_hot(&file.location))
}

/// Whether scans of `kind` read the row groups' bloom filters. Spans and traces are sorted by
/// trace id within each block, so row-group statistics already narrow a trace id to one row
/// group, and the catalog's per-block filter picks the blocks; reading every row group's bloom
/// filter as well would only cost time. Logs are sorted by service and time, where the bloom
/// filter on `trace_id` is what finds a trace's records.
fn reads_row_group_blooms(kind: TableKind) -> bool {
    matches!(kind, TableKind::Logs)
}

#[async_trait]
impl TableProvider for SpanlakeTable {
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
        let schema = self.schema();
        let bounds = ScanBounds::from_filters(filters, self.kind);
        // Listing blocks before asking for live rows is what makes the union exactly-once;
        // the pin, taken before the listing, keeps the rows of blocks committed after it live.
        let pin = self.live.pin();
        let mut blocks = self.catalog.blocks(&self.tenant, self.kind.signal());
        if let Some(shards) = &self.shards {
            blocks.retain(|b| shards.contains(&b.shard));
        }
        let live = LiveExec::new(
            LiveScan {
                tenant: self.tenant.clone(),
                table: self.kind,
                // A compacted block also stands for the blocks it replaced, whose rows may
                // still be held live for older pins.
                exclude_blocks: blocks
                    .iter()
                    .flat_map(|b| std::iter::once(&b.block_id).chain(&b.compacted_from))
                    .cloned()
                    .collect(),
                trace_ids: bounds.trace_ids.clone(),
                start_ns: bounds.start_ns,
                end_ns: bounds.end_ns,
                shards: self.shards.clone(),
            },
            self.live.clone(),
            pin,
            projection.cloned(),
            self.analytic,
            // A few traces' rows are too few to split.
            if bounds.trace_ids.is_some() {
                1
            } else {
                state.config().target_partitions()
            },
        )?;
        let (cached, files): (Vec<_>, Vec<_>) = blocks
            .iter()
            .filter(|b| bounds.admits_block(b))
            .map(|b| b.file(file_of(self.kind)))
            .partition(|file| {
                self.block_cache.as_ref().is_some_and(|cache| {
                    reads_through_cache(cache, self.kind, self.analytic, &bounds, file)
                })
            });
        let store = state
            .runtime_env()
            .object_store(Storage::object_store_url())?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if let (Some(cache), false) = (&self.block_cache, cached.is_empty()) {
            inputs.push(Arc::new(BlockCacheExec::new(
                cached,
                schema.clone(),
                projection.cloned(),
                bounds.trace_ids.clone(),
                limit,
                // A few traces' rows are too few to split.
                if bounds.trace_ids.is_some() {
                    1
                } else {
                    state.config().target_partitions()
                },
                cache.clone(),
                store.clone(),
            )?));
        }
        let files: Vec<PartitionedFile> = files
            .into_iter()
            .map(PartitionedFile::new_from_meta)
            .collect();
        if files.is_empty() {
            if inputs.is_empty() {
                return Ok(Arc::new(live));
            }
            inputs.push(Arc::new(live));
            return UnionExec::try_new(inputs);
        }

        // Footers and page indexes are read once per file and kept in the runtime's metadata
        // cache (blocks never change once committed); later scans fetch only row groups.
        let metadata = state.runtime_env().cache_manager.get_file_metadata_cache();
        let mut source = ParquetSource::new(schema.clone())
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                store, metadata,
            )))
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_pushdown_filters(filters_while_decoding(self.analytic, &bounds))
            .with_enable_page_index(true)
            .with_bloom_filter_on_read(reads_row_group_blooms(self.kind));
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
        inputs.insert(0, DataSourceExec::from_data_source(config));
        inputs.push(Arc::new(live));
        UnionExec::try_new(inputs)
    }
}
