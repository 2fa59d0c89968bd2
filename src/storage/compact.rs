//! Compaction: small blocks of one tenant, signal and shard whose rows fall in one time window
//! become one larger block, re-sorted by the signal's sort key.
//!
//! Trace blocks are rebuilt from their spans: the spans of a trace that arrived in several
//! blocks end together, with the nested-set columns and the `traces` row recomputed for the
//! whole trace, and exact duplicates (same ids and content, as a retried export leaves) kept
//! once. Log and metric blocks are concatenated and sorted again.
//!
//! The new block's meta names the blocks it replaces and is its commit point, as for every
//! block; the catalog then swaps them in one step ([`super::Catalog::replace`]). The replaced
//! blocks' files are deleted by the caller, after a grace period longer than any query.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{BlockData, BlockMeta, Catalog, DATA_FILE, Storage, StorageError};
use crate::schema::to_otlp::rows_from_batch;
use crate::schema::{Signal, SpanRow, TableKind, TraceId, logs, metrics, spans, traces};

/// Which blocks compaction merges.
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    /// Blocks are merged only with blocks whose latest row falls in the same window.
    pub window_ns: i64,
    /// A block with this many rows or more is not merged again; a merge stops adding blocks
    /// once it reaches this many.
    pub max_rows: u64,
    /// Blocks younger than this are left alone (their rows may still be read live).
    pub min_age_ns: i64,
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    /// The new block.
    pub block: Arc<BlockMeta>,
    /// The blocks it replaced, now out of the catalog; their files are still there.
    pub replaced: Vec<Arc<BlockMeta>>,
}

impl Compaction {
    /// Bytes of the replaced blocks' files.
    pub fn input_bytes(&self) -> u64 {
        self.replaced.iter().map(|b| b.bytes()).sum()
    }
}

/// Groups of blocks to merge, each of one tenant, signal, shard and window, oldest first.
pub fn plan(catalog: &Catalog, policy: &CompactionPolicy, now_ns: i64) -> Vec<Vec<Arc<BlockMeta>>> {
    let window = policy.window_ns.max(1);
    let mut candidates: BTreeMap<(String, Signal, u32, i64), Vec<Arc<BlockMeta>>> = BTreeMap::new();
    for tenant in catalog.tenants() {
        for block in catalog.all_blocks(&tenant) {
            let old_enough = now_ns.saturating_sub(block.created_at_ns) >= policy.min_age_ns;
            if old_enough && block.rows < policy.max_rows {
                let key = (
                    tenant.clone(),
                    block.signal,
                    block.shard,
                    block.max_time_ns.div_euclid(window),
                );
                candidates.entry(key).or_default().push(block);
            }
        }
    }
    let mut groups = Vec::new();
    for mut blocks in candidates.into_values() {
        blocks.sort_by_key(|b| (b.min_time_ns, b.block_id.clone()));
        let mut group: Vec<Arc<BlockMeta>> = Vec::new();
        let mut rows = 0;
        for block in blocks {
            if !group.is_empty() && rows + block.rows > policy.max_rows {
                if group.len() > 1 {
                    groups.push(std::mem::take(&mut group));
                }
                group.clear();
                rows = 0;
            }
            rows += block.rows;
            group.push(block);
        }
        if group.len() > 1 {
            groups.push(group);
        }
    }
    groups
}

/// Merges `group` (one tenant, signal and shard) into one block, commits it and swaps it into
/// the catalog.
pub async fn compact(
    storage: &Storage,
    catalog: &Catalog,
    group: &[Arc<BlockMeta>],
) -> Result<Compaction, StorageError> {
    let first = group
        .first()
        .ok_or_else(|| StorageError::Io(std::io::Error::other("nothing to compact")))?;
    let signal = first.signal;
    let mut inputs = Vec::with_capacity(group.len());
    for block in group {
        inputs.extend(storage.read_file(block, DATA_FILE).await?);
    }
    let (data, traces, trace_count) = tokio::task::spawn_blocking(move || merge(signal, inputs))
        .await
        .map_err(std::io::Error::other)??;
    let trace_ids = group
        .iter()
        .filter(|b| !b.min_trace_id.is_empty())
        .flat_map(|b| [b.min_trace_id.as_str(), b.max_trace_id.as_str()])
        .filter_map(|hex| crate::ids::parse_trace_id(hex).ok());
    let trace_id_range: Option<(TraceId, TraceId)> = trace_ids.clone().min().zip(trace_ids.max());
    let mut names: Vec<String> = group.iter().flat_map(|b| b.names.clone()).collect();
    names.sort_unstable();
    names.dedup();
    let listed_names = group.iter().all(|b| !b.names.is_empty());
    let block = BlockData {
        tenant: first.tenant.clone(),
        signal,
        shard: first.shard,
        block_id: uuid::Uuid::now_v7().to_string(),
        data,
        traces,
        min_time_ns: group
            .iter()
            .map(|b| b.min_time_ns)
            .min()
            .unwrap_or_default(),
        max_time_ns: group
            .iter()
            .map(|b| b.max_time_ns)
            .max()
            .unwrap_or_default(),
        trace_id_range,
        trace_count,
        // A block that listed no names may hold any: so may the merge.
        names: if listed_names { names } else { Vec::new() },
        compaction_level: group.iter().map(|b| b.compaction_level).max().unwrap_or(0) + 1,
        compacted_from: group.iter().map(|b| b.block_id.clone()).collect(),
    };
    let wal_through = group.iter().map(|b| b.wal_through).max().unwrap_or(0);
    let meta = storage.write_block(&block, wal_through).await?;
    super::fault_point("compaction-committed");
    let replaced = catalog.replace(meta.clone());
    Ok(Compaction {
        block: Arc::new(meta),
        replaced,
    })
}

/// The merged rows of `signal`: the main table, the `traces` rows of trace blocks and the
/// number of traces.
fn merge(
    signal: Signal,
    inputs: Vec<RecordBatch>,
) -> Result<(RecordBatch, Option<RecordBatch>, u64), StorageError> {
    match signal {
        Signal::Traces => {
            let mut by_trace: BTreeMap<TraceId, Vec<SpanRow>> = BTreeMap::new();
            for batch in &inputs {
                for span in rows_from_batch(batch)? {
                    by_trace.entry(span.trace_id).or_default().push(span);
                }
            }
            for spans in by_trace.values_mut() {
                spans.sort_by(|a, b| {
                    (a.start_time_unix_nano, a.span_id).cmp(&(b.start_time_unix_nano, b.span_id))
                });
                // A retried export stores a span twice, identical: keep it once.
                spans.dedup();
            }
            let sorted: Vec<Vec<&SpanRow>> = by_trace
                .values()
                .map(|spans| spans.iter().collect())
                .collect();
            Ok((
                spans::to_batch(&sorted)?,
                Some(traces::to_batch(&sorted)?),
                by_trace.len() as u64,
            ))
        }
        Signal::Logs => Ok((
            sorted(TableKind::Logs, &inputs, &[logs::SERVICE_NAME, logs::TIME])?,
            None,
            0,
        )),
        Signal::Metrics => Ok((
            sorted(
                TableKind::Metrics,
                &inputs,
                &[metrics::METRIC_NAME, metrics::SERIES_ID, metrics::TIME],
            )?,
            None,
            0,
        )),
    }
}

/// `inputs` concatenated in `table`'s schema and sorted by `keys`.
fn sorted(
    table: TableKind,
    inputs: &[RecordBatch],
    keys: &[&str],
) -> Result<RecordBatch, StorageError> {
    let schema = table.schema();
    let all = concat_batches(&schema, inputs)?;
    let columns: Vec<SortColumn> = keys
        .iter()
        .map(|key| {
            Ok(SortColumn {
                values: all
                    .column_by_name(key)
                    .ok_or_else(|| {
                        arrow::error::ArrowError::SchemaError(format!("no column {key}"))
                    })?
                    .clone(),
                options: None,
            })
        })
        .collect::<Result<_, arrow::error::ArrowError>>()?;
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(&all, &indices)?)
}

impl Storage {
    /// Every row of one of a block's Parquet files.
    pub async fn read_file(
        &self,
        block: &BlockMeta,
        name: &str,
    ) -> Result<Vec<RecordBatch>, StorageError> {
        let bytes = self
            .store()
            .get(&block.dir().clone().join(name))
            .await?
            .bytes()
            .await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }
}
