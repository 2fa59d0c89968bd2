//! Writing a block: Parquet files first, then `meta.json` as the commit point.

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::{META_FILE, SPANS_FILE, Storage, StorageError, TRACES_FILE};
use crate::schema::{SCHEMA_VERSION, spans, traces};

/// Rows per Parquet row group: small enough that a trace-by-id read decodes little beyond
/// the trace itself, large enough that per-group overhead stays negligible.
pub const ROW_GROUP_ROWS: usize = 8192;

/// A cut block ready to be written: rows already sorted by trace id, then start time.
#[derive(Debug, Clone)]
pub struct BlockData {
    pub tenant: String,
    pub shard: u32,
    pub block_id: String,
    pub spans: RecordBatch,
    pub traces: RecordBatch,
    pub min_start_ns: i64,
    pub max_start_ns: i64,
    pub min_trace_id: [u8; 16],
    pub max_trace_id: [u8; 16],
    pub trace_count: u64,
}

/// What `meta.json` records about a committed block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub block_id: String,
    pub tenant: String,
    pub shard: u32,
    pub schema_version: u32,
    pub compaction_level: u32,
    /// Earliest and latest span start time, in Unix nanoseconds.
    pub min_start_ns: i64,
    pub max_start_ns: i64,
    /// Smallest and largest trace id, lowercase hex.
    pub min_trace_id: String,
    pub max_trace_id: String,
    pub span_count: u64,
    pub trace_count: u64,
    pub spans_bytes: u64,
    pub traces_bytes: u64,
    /// Every WAL segment up to this one is reflected in this block or re-logged after it.
    pub wal_through: u64,
    pub created_at_ns: i64,
}

impl BlockMeta {
    /// The block's directory.
    pub fn dir(&self) -> Path {
        Storage::block_dir(&self.tenant, self.shard, &self.block_id)
    }

    /// Object meta of one of the block's Parquet files, for DataFusion's file scan.
    pub fn file(&self, name: &str) -> ObjectMeta {
        let size = if name == SPANS_FILE {
            self.spans_bytes
        } else {
            self.traces_bytes
        };
        ObjectMeta {
            location: self.dir().clone().join(name),
            last_modified: chrono::DateTime::from_timestamp_nanos(self.created_at_ns),
            size,
            e_tag: None,
            version: None,
        }
    }

    /// True when the block may hold a span starting in `[start, end)` (Unix nanoseconds).
    pub fn overlaps(&self, start: Option<i64>, end: Option<i64>) -> bool {
        start.is_none_or(|s| self.max_start_ns >= s) && end.is_none_or(|e| self.min_start_ns < e)
    }

    /// True when `trace_id` lies within the block's trace-id range.
    pub fn may_contain_trace(&self, trace_id: &[u8; 16]) -> bool {
        let id = crate::ids::hex(trace_id);
        self.min_trace_id <= id && id <= self.max_trace_id
    }
}

fn writer_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_bloom_filter_enabled(ColumnPath::from(spans::TRACE_ID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(spans::TRACE_ID), 0.01);
    for id_column in [spans::TRACE_ID, spans::SPAN_ID, spans::PARENT_SPAN_ID] {
        // Random ids never repeat within a page: a dictionary would only cost space.
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(id_column), false);
    }
    builder.build()
}

fn to_parquet(batch: &RecordBatch) -> Result<Bytes, StorageError> {
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

impl Storage {
    /// Writes a block and commits it; returns the committed meta.
    pub async fn write_block(
        &self,
        block: &BlockData,
        wal_through: u64,
    ) -> Result<BlockMeta, StorageError> {
        debug_assert_eq!(block.spans.schema(), spans::schema());
        debug_assert_eq!(block.traces.schema(), traces::schema());
        let (spans_file, traces_file) = {
            let (spans_batch, traces_batch) = (block.spans.clone(), block.traces.clone());
            tokio::task::spawn_blocking(move || {
                Ok::<_, StorageError>((to_parquet(&spans_batch)?, to_parquet(&traces_batch)?))
            })
            .await
            .map_err(std::io::Error::other)??
        };
        let dir = Storage::block_dir(&block.tenant, block.shard, &block.block_id);
        let meta = BlockMeta {
            block_id: block.block_id.clone(),
            tenant: block.tenant.clone(),
            shard: block.shard,
            schema_version: SCHEMA_VERSION,
            compaction_level: 0,
            min_start_ns: block.min_start_ns,
            max_start_ns: block.max_start_ns,
            min_trace_id: crate::ids::hex(&block.min_trace_id),
            max_trace_id: crate::ids::hex(&block.max_trace_id),
            span_count: block.spans.num_rows() as u64,
            trace_count: block.trace_count,
            spans_bytes: spans_file.len() as u64,
            traces_bytes: traces_file.len() as u64,
            wal_through,
            created_at_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        };
        let store = self.store();
        for (name, bytes) in [(SPANS_FILE, spans_file), (TRACES_FILE, traces_file)] {
            let path = dir.clone().join(name);
            store.put(&path, PutPayload::from(bytes)).await?;
            self.sync(&path).await?;
        }
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
