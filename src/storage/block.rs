//! Writing a block: Parquet files first, then `meta.json` as the commit point.

use arrow::array::{AsArray, RecordBatch};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::bloom::TraceIdBloom;
use super::{DATA_FILE, META_FILE, Storage, StorageError, TRACES_FILE};
use crate::schema::{SCHEMA_VERSION, Signal, TraceId, logs, spans};

/// Rows per Parquet row group. Lookups are narrowed by the page index within a group, so
/// groups can be large; each column chunk read costs a decompression context, and a search
/// reads each column of every group.
pub const ROW_GROUP_ROWS: usize = 65536;
/// Rows per data page at most. Rows are sorted by trace id (spans, traces) or by service and
/// time (logs), so the page index narrows a lookup of a few traces to a page per trace and
/// column, and only those pages are read and decompressed, not whole row groups.
pub const PAGE_ROWS: usize = 4096;

/// A cut block ready to be written, its rows already in the signal's sort order.
#[derive(Debug, Clone)]
pub struct BlockData {
    pub tenant: String,
    pub signal: Signal,
    pub shard: u32,
    pub block_id: String,
    /// The rows of the signal's main table: `spans`, `logs` or `metrics`.
    pub data: RecordBatch,
    /// Trace blocks: the `traces` rows.
    pub traces: Option<RecordBatch>,
    /// Earliest and latest row time (span start, log or point time), Unix nanoseconds.
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    /// Smallest and largest trace id among the rows; `None` when no row has one.
    pub trace_id_range: Option<([u8; 16], [u8; 16])>,
    pub trace_count: u64,
    /// Distinct values of the table's name column, sorted (empty for trace blocks).
    pub names: Vec<String>,
    /// 0 for a block the ingester cut; one more than its highest input for a compacted block.
    pub compaction_level: u32,
    /// The blocks a compacted block replaces; empty for a block the ingester cut.
    pub compacted_from: Vec<String>,
}

/// What `meta.json` records about a committed block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub block_id: String,
    pub tenant: String,
    /// Blocks written before logs and metrics existed are trace blocks.
    #[serde(default)]
    pub signal: Signal,
    pub shard: u32,
    pub schema_version: u32,
    pub compaction_level: u32,
    /// Earliest and latest row time (span start, log or point time), in Unix nanoseconds.
    #[serde(alias = "min_start_ns")]
    pub min_time_ns: i64,
    #[serde(alias = "max_start_ns")]
    pub max_time_ns: i64,
    /// Smallest and largest trace id, lowercase hex; both empty when no row has one.
    pub min_trace_id: String,
    pub max_trace_id: String,
    /// Rows of `data.parquet`: spans, log records or metric points.
    #[serde(alias = "span_count")]
    pub rows: u64,
    pub trace_count: u64,
    #[serde(alias = "spans_bytes")]
    pub data_bytes: u64,
    #[serde(default)]
    pub traces_bytes: u64,
    /// Distinct values of the table's name column (`service_name` of logs, `metric_name` of
    /// metrics), for pruning blocks by name; empty when not recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Every WAL segment up to this one is reflected in this block or re-logged after it.
    pub wal_through: u64,
    pub created_at_ns: i64,
    /// The blocks this compacted block replaces. Committing this meta retires them: a catalog
    /// loading both keeps this one and drops them, so a crash mid-compaction never shows a row
    /// twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compacted_from: Vec<String>,
    /// The block's trace ids, approximately; absent in blocks without trace ids and in
    /// blocks written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_bloom: Option<TraceIdBloom>,
}

/// Blocks list at most this many names in their meta; a block with more lists none and is
/// never pruned by name.
const MAX_NAMES: usize = 1000;

impl BlockMeta {
    /// The block's directory.
    pub fn dir(&self) -> Path {
        Storage::block_dir(&self.tenant, self.signal, self.shard, &self.block_id)
    }

    /// Bytes of the block's Parquet files.
    pub fn bytes(&self) -> u64 {
        self.data_bytes + self.traces_bytes
    }

    /// Object meta of one of the block's Parquet files, for DataFusion's file scan.
    pub fn file(&self, name: &str) -> ObjectMeta {
        let size = if name == TRACES_FILE {
            self.traces_bytes
        } else {
            self.data_bytes
        };
        ObjectMeta {
            location: self.dir().clone().join(name),
            last_modified: chrono::DateTime::from_timestamp_nanos(self.created_at_ns),
            size,
            e_tag: None,
            version: None,
        }
    }

    /// True when the block may hold a row whose time is in `[start, end)` (Unix nanoseconds).
    pub fn overlaps(&self, start: Option<i64>, end: Option<i64>) -> bool {
        start.is_none_or(|s| self.max_time_ns >= s) && end.is_none_or(|e| self.min_time_ns < e)
    }

    /// False when the block's trace-id range or bloom filter proves it holds no row of
    /// `trace_id`.
    pub fn may_contain_trace(&self, trace_id: &[u8; 16]) -> bool {
        if self.min_trace_id.is_empty() {
            return false;
        }
        let id = crate::ids::hex(trace_id);
        self.min_trace_id <= id
            && id <= self.max_trace_id
            && self
                .trace_bloom
                .as_ref()
                .is_none_or(|bloom| bloom.may_contain(trace_id))
    }

    /// True unless the block's listed names prove it holds no row named `name`.
    pub fn may_contain_name(&self, name: &str) -> bool {
        self.names.is_empty()
            || self
                .names
                .binary_search_by(|n| n.as_str().cmp(name))
                .is_ok()
    }
}

/// Parquet settings of a block's files: zstd, pages of at most [`PAGE_ROWS`] rows with
/// statistics, and for the files with trace ids a bloom filter on `trace_id` and no dictionary
/// on random ids.
fn writer_properties(signal: Signal) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS);
    let (bloom, ids): (Option<&str>, &[&str]) = match signal {
        Signal::Traces => (
            Some(spans::TRACE_ID),
            &[spans::TRACE_ID, spans::SPAN_ID, spans::PARENT_SPAN_ID],
        ),
        Signal::Logs => (Some(logs::TRACE_ID), &[logs::TRACE_ID, logs::SPAN_ID]),
        Signal::Metrics => (None, &[]),
    };
    if let Some(column) = bloom {
        builder = builder
            .set_column_bloom_filter_enabled(ColumnPath::from(column), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(column), 0.01);
    }
    for id_column in ids {
        // Random ids never repeat within a page: a dictionary would only cost space.
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*id_column), false);
    }
    builder.build()
}

fn to_parquet(batch: &RecordBatch, signal: Signal) -> Result<Bytes, StorageError> {
    let mut buffer = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buffer, batch.schema(), Some(writer_properties(signal)))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// The bloom filter of the trace ids in `data`'s `trace_id` column, if it has one.
fn trace_bloom(data: &RecordBatch) -> Option<TraceIdBloom> {
    let ids = data
        .column_by_name(spans::TRACE_ID)?
        .as_fixed_size_binary_opt()?;
    let mut distinct: Vec<TraceId> = ids
        .iter()
        .flatten()
        .filter_map(|id| TraceId::try_from(id).ok())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    (!distinct.is_empty()).then(|| TraceIdBloom::new(distinct.iter()))
}

impl Storage {
    /// Writes a block and commits it; returns the committed meta.
    pub async fn write_block(
        &self,
        block: &BlockData,
        wal_through: u64,
    ) -> Result<BlockMeta, StorageError> {
        let signal = block.signal;
        let (data_file, traces_file) = {
            let (data, traces) = (block.data.clone(), block.traces.clone());
            tokio::task::spawn_blocking(move || {
                let traces = traces.map(|t| to_parquet(&t, signal)).transpose()?;
                Ok::<_, StorageError>((to_parquet(&data, signal)?, traces))
            })
            .await
            .map_err(std::io::Error::other)??
        };
        let dir = Storage::block_dir(&block.tenant, signal, block.shard, &block.block_id);
        let (min_trace_id, max_trace_id) = match &block.trace_id_range {
            Some((min, max)) => (crate::ids::hex(min), crate::ids::hex(max)),
            None => (String::new(), String::new()),
        };
        let mut names = block.names.clone();
        if names.len() > MAX_NAMES {
            names.clear();
        }
        let meta = BlockMeta {
            block_id: block.block_id.clone(),
            tenant: block.tenant.clone(),
            signal,
            shard: block.shard,
            schema_version: SCHEMA_VERSION,
            compaction_level: block.compaction_level,
            min_time_ns: block.min_time_ns,
            max_time_ns: block.max_time_ns,
            min_trace_id,
            max_trace_id,
            rows: block.data.num_rows() as u64,
            trace_count: block.trace_count,
            data_bytes: data_file.len() as u64,
            traces_bytes: traces_file.as_ref().map_or(0, |f| f.len() as u64),
            names,
            wal_through,
            created_at_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            compacted_from: block.compacted_from.clone(),
            trace_bloom: trace_bloom(&block.data),
        };
        let store = self.store();
        let files =
            std::iter::once((DATA_FILE, data_file)).chain(traces_file.map(|f| (TRACES_FILE, f)));
        for (name, bytes) in files {
            let path = dir.clone().join(name);
            store.put(&path, PutPayload::from(bytes)).await?;
            self.sync(&path).await?;
        }
        super::fault_point(if block.compaction_level == 0 {
            "block-files-written"
        } else {
            "compaction-files-written"
        });
        let meta_json = serde_json::to_vec_pretty(&meta).map_err(|source| StorageError::Meta {
            path: dir.to_string(),
            source,
        })?;
        // The commit point: only now does the block exist for readers.
        let meta_path = dir.join(META_FILE);
        store.put(&meta_path, PutPayload::from(meta_json)).await?;
        self.sync(&meta_path).await?;
        Ok(meta)
    }
}
