//! Decoded block columns, held in memory for the search path.
//!
//! Grafana asks about the same recent blocks again and again (a refreshed dashboard, a query
//! being refined), and decoding their Parquet pages is most of what such a search costs. So
//! the columns a scan decodes are kept per row group as Arrow arrays, up to a memory budget,
//! the least recently used going first. Blocks never change once committed (every block has
//! a new id), so a kept column is never stale.
//!
//! [`BlockCacheExec`] reads blocks through the cache the way [`super::LiveExec`] reads live
//! rows: zero-copy slices of the kept arrays, left for the filter above it to narrow. A scan
//! bounded by trace ids takes only their rows, found by binary search in the row group's
//! `trace_id` column (blocks of spans and traces are sorted by it). A lookup of one trace goes
//! through the cache only for files a scan has brought in already (a column of each row group
//! is kept), so that looking up a trace in a cold block reads its pages from Parquet instead
//! of decoding whole row groups.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, RecordBatchOptions, new_null_array,
};
use arrow::compute::{cast, concat};
use arrow::datatypes::{Field, SchemaRef};
use datafusion::common::{Result, exec_err};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use parking_lot::Mutex;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};

use crate::ids::TraceId;

/// The column whose sort order bounded scans rely on.
const TRACE_ID: &str = "trace_id";

/// Decoded columns of block files, per row group, up to a budget of bytes.
#[derive(Debug)]
pub struct BlockCache {
    max_bytes: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Footers of the files with kept columns.
    metadata: HashMap<Path, ArrowReaderMetadata>,
    columns: HashMap<ColumnKey, Kept>,
    /// Kept columns per row group.
    resident: HashMap<(Path, usize), usize>,
    /// Row groups whose kept `trace_id` column is sorted.
    sorted: HashMap<(Path, usize), bool>,
    used: u64,
    clock: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ColumnKey {
    file: Path,
    row_group: usize,
    column: String,
}

#[derive(Debug)]
struct Kept {
    array: ArrayRef,
    bytes: u64,
    used_at: u64,
}

impl BlockCache {
    /// A cache holding about `max_bytes` of decoded columns.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Columns found kept, and columns decoded, since the start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Bytes of the kept columns.
    pub fn bytes(&self) -> u64 {
        self.state.lock().used
    }

    /// Whether every row group of `file` has a kept column: a file scans have brought in.
    pub fn is_hot(&self, file: &Path) -> bool {
        let state = self.state.lock();
        state.metadata.get(file).is_some_and(|m| {
            (0..m.metadata().num_row_groups()).all(|rg| {
                state
                    .resident
                    .get(&(file.clone(), rg))
                    .is_some_and(|n| *n > 0)
            })
        })
    }

    /// The footer of `file`, read once while the file has kept columns.
    async fn metadata(
        &self,
        store: &Arc<dyn ObjectStore>,
        file: &ObjectMeta,
    ) -> Result<ArrowReaderMetadata> {
        if let Some(kept) = self.state.lock().metadata.get(&file.location) {
            return Ok(kept.clone());
        }
        let mut reader = reader(store, file)?;
        let metadata =
            ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?;
        self.state
            .lock()
            .metadata
            .insert(file.location.clone(), metadata.clone());
        Ok(metadata)
    }

    /// The columns `fields` of row group `row_group` of `file`, as the fields' types: the kept
    /// ones, and the others decoded in one read and kept. A column the file lacks is NULL.
    async fn columns(
        &self,
        store: &Arc<dyn ObjectStore>,
        file: &ObjectMeta,
        metadata: &ArrowReaderMetadata,
        row_group: usize,
        fields: &[&Field],
    ) -> Result<Vec<ArrayRef>> {
        let mut found: Vec<Option<ArrayRef>> = {
            let mut state = self.state.lock();
            state.clock += 1;
            let clock = state.clock;
            fields
                .iter()
                .map(|field| {
                    let key = ColumnKey {
                        file: file.location.clone(),
                        row_group,
                        column: field.name().clone(),
                    };
                    state.columns.get_mut(&key).map(|kept| {
                        kept.used_at = clock;
                        kept.array.clone()
                    })
                })
                .collect()
        };
        let missing: Vec<&Field> = fields
            .iter()
            .zip(&found)
            .filter(|(_, kept)| kept.is_none())
            .map(|(field, _)| *field)
            .collect();
        self.hits
            .fetch_add((fields.len() - missing.len()) as u64, Ordering::Relaxed);
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        let mut decoded = decode(store, file, metadata, row_group, &missing).await?;
        self.keep(&file.location, row_group, &decoded);
        for (slot, field) in found.iter_mut().zip(fields) {
            if slot.is_none() {
                *slot = decoded.remove(field.name());
            }
        }
        found
            .into_iter()
            .zip(fields)
            .map(|(array, field)| match array {
                Some(array) => Ok(array),
                None => exec_err!("column {} was not decoded", field.name()),
            })
            .collect()
    }

    /// Whether the kept `trace_id` column of `row_group` of `file` is sorted.
    fn trace_ids_sorted(&self, file: &Path, row_group: usize) -> bool {
        self.state
            .lock()
            .sorted
            .get(&(file.clone(), row_group))
            .copied()
            .unwrap_or(false)
    }

    /// Keeps decoded columns, then lets the least recently used go until the budget holds.
    fn keep(&self, file: &Path, row_group: usize, decoded: &HashMap<String, ArrayRef>) {
        let mut state = self.state.lock();
        state.clock += 1;
        let clock = state.clock;
        for (column, array) in decoded {
            let key = ColumnKey {
                file: file.clone(),
                row_group,
                column: column.clone(),
            };
            if column == TRACE_ID {
                let sorted = array.as_fixed_size_binary_opt().is_some_and(is_sorted);
                state.sorted.insert((file.clone(), row_group), sorted);
            }
            let bytes = array.get_array_memory_size() as u64;
            let kept = Kept {
                array: array.clone(),
                bytes,
                used_at: clock,
            };
            match state.columns.insert(key, kept) {
                Some(old) => state.used -= old.bytes,
                None => *state.resident.entry((file.clone(), row_group)).or_default() += 1,
            }
            state.used += bytes;
        }
        if state.used > self.max_bytes {
            state.evict(self.max_bytes - self.max_bytes / 8);
        }
    }
}

impl State {
    /// Drops the least recently used columns until at most `target` bytes are kept.
    fn evict(&mut self, target: u64) {
        let mut by_age: Vec<(u64, ColumnKey)> = self
            .columns
            .iter()
            .map(|(key, kept)| (kept.used_at, key.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(used_at, _)| *used_at);
        for (_, key) in by_age {
            if self.used <= target {
                break;
            }
            let Some(kept) = self.columns.remove(&key) else {
                continue;
            };
            self.used -= kept.bytes;
            let group = (key.file.clone(), key.row_group);
            if key.column == TRACE_ID {
                self.sorted.remove(&group);
            }
            if let Some(n) = self.resident.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    self.resident.remove(&group);
                }
            }
        }
        let resident: std::collections::HashSet<&Path> =
            self.resident.keys().map(|(file, _)| file).collect();
        let unused: Vec<Path> = self
            .metadata
            .keys()
            .filter(|file| !resident.contains(file))
            .cloned()
            .collect();
        for file in unused {
            self.metadata.remove(&file);
        }
    }
}

/// A reader of `file`'s byte ranges.
fn reader(store: &Arc<dyn ObjectStore>, file: &ObjectMeta) -> Result<Box<dyn AsyncFileReader>> {
    let reader = DefaultParquetFileReaderFactory::new(store.clone()).create_reader(
        0,
        PartitionedFile::new_from_meta(file.clone()),
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    Ok(reader)
}

/// Decodes the columns `fields` of one row group in one read, cast to the fields' types.
async fn decode(
    store: &Arc<dyn ObjectStore>,
    file: &ObjectMeta,
    metadata: &ArrowReaderMetadata,
    row_group: usize,
    fields: &[&Field],
) -> Result<HashMap<String, ArrayRef>> {
    let rows = metadata.metadata().row_group(row_group).num_rows() as usize;
    let file_schema = metadata.schema().clone();
    let roots: Vec<usize> = fields
        .iter()
        .filter_map(|f| file_schema.index_of(f.name()).ok())
        .collect();
    let mut columns: HashMap<String, Vec<ArrayRef>> = HashMap::new();
    if !roots.is_empty() {
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            reader(store, file)?,
            metadata.clone(),
        )
        .with_row_groups(vec![row_group])
        .with_projection(ProjectionMask::roots(metadata.parquet_schema(), roots))
        .with_batch_size(rows.max(1))
        .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        for batch in batches {
            for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
                columns
                    .entry(field.name().clone())
                    .or_default()
                    .push(array.clone());
            }
        }
    }
    let mut decoded = HashMap::with_capacity(fields.len());
    for field in fields {
        let array = match columns.remove(field.name()) {
            None => new_null_array(field.data_type(), rows),
            Some(parts) if parts.len() == 1 => parts.into_iter().next().expect("one part"),
            Some(parts) => concat(&parts.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?,
        };
        let array = if array.data_type() == field.data_type() {
            array
        } else {
            cast(&array, field.data_type())?
        };
        decoded.insert(field.name().clone(), array);
    }
    Ok(decoded)
}

fn is_sorted(ids: &FixedSizeBinaryArray) -> bool {
    ids.null_count() == 0 && (1..ids.len()).all(|i| ids.value(i - 1) <= ids.value(i))
}

/// The rows of `ids` (sorted) whose trace id is one of `wanted` (sorted), as ranges in order,
/// adjacent ones merged.
fn rows_of(ids: &FixedSizeBinaryArray, sorted: bool, wanted: &[TraceId]) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut push = |range: Range<usize>| {
        if range.is_empty() {
            return;
        }
        match ranges.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => ranges.push(range),
        }
    };
    if sorted {
        let bound = |id: &[u8], inclusive: bool| {
            let (mut lo, mut hi) = (0, ids.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                let below = if inclusive {
                    ids.value(mid) <= id
                } else {
                    ids.value(mid) < id
                };
                if below {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        for id in wanted {
            push(bound(id, false)..bound(id, true));
        }
    } else {
        for row in 0..ids.len() {
            if ids.is_valid(row)
                && wanted
                    .binary_search_by(|w| w[..].cmp(ids.value(row)))
                    .is_ok()
            {
                push(row..row + 1);
            }
        }
    }
    ranges
}

/// Whether the statistics of `row_group` allow a `trace_id` in `wanted` (sorted).
fn may_hold_trace(metadata: &ArrowReaderMetadata, row_group: usize, wanted: &[TraceId]) -> bool {
    let meta = metadata.metadata().row_group(row_group);
    let Some(column) = meta
        .columns()
        .iter()
        .find(|c| c.column_path().string() == TRACE_ID)
    else {
        return true;
    };
    let Some(stats) = column.statistics() else {
        return true;
    };
    let (Some(min), Some(max)) = (stats.min_bytes_opt(), stats.max_bytes_opt()) else {
        return true;
    };
    wanted.iter().any(|id| min <= &id[..] && &id[..] <= max)
}

/// Reads block files through a [`BlockCache`]: every row of their row groups (or, bounded by
/// trace ids, those traces' rows), as zero-copy slices of the kept columns. Row groups are
/// dealt over the partitions.
#[derive(Debug)]
pub struct BlockCacheExec {
    files: Vec<ObjectMeta>,
    /// The table's columns.
    table_schema: SchemaRef,
    /// The columns read: the table's, projected.
    schema: SchemaRef,
    /// Only these traces' rows (sorted), when given.
    trace_ids: Option<Arc<Vec<TraceId>>>,
    limit: Option<usize>,
    cache: Arc<BlockCache>,
    store: Arc<dyn ObjectStore>,
    properties: Arc<PlanProperties>,
}

impl BlockCacheExec {
    /// A plan reading `files` of a table with `table_schema` through `cache`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        files: Vec<ObjectMeta>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        trace_ids: Option<Vec<TraceId>>,
        limit: Option<usize>,
        partitions: usize,
        cache: Arc<BlockCache>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(indices) => Arc::new(table_schema.project(indices)?),
            None => table_schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let trace_ids = trace_ids.map(|mut ids| {
            ids.sort_unstable();
            ids.dedup();
            Arc::new(ids)
        });
        Ok(Self {
            files,
            table_schema,
            schema,
            trace_ids,
            limit,
            cache,
            store,
            properties,
        })
    }
}

/// What one partition of a [`BlockCacheExec`] needs to read its row groups.
#[derive(Clone)]
struct UnitReader {
    cache: Arc<BlockCache>,
    store: Arc<dyn ObjectStore>,
    schema: SchemaRef,
    /// Only the rows of these traces, when given.
    wanted: Option<WantedTraces>,
    batch_size: usize,
}

/// The traces a [`UnitReader`] reads the rows of, and the trace id column it finds them by.
#[derive(Clone)]
struct WantedTraces {
    field: Arc<Field>,
    ids: Arc<Vec<TraceId>>,
}

impl UnitReader {
    /// The rows of one row group, in slices of at most the batch size.
    async fn read(
        &self,
        file: ObjectMeta,
        metadata: ArrowReaderMetadata,
        row_group: usize,
    ) -> Result<Vec<RecordBatch>> {
        let rows = metadata.metadata().row_group(row_group).num_rows() as usize;
        let ranges = match &self.wanted {
            None => std::iter::once(0..rows).collect(),
            Some(WantedTraces { field, ids: wanted }) => {
                if !may_hold_trace(&metadata, row_group, wanted) {
                    return Ok(Vec::new());
                }
                let ids = self
                    .cache
                    .columns(&self.store, &file, &metadata, row_group, &[field.as_ref()])
                    .await?;
                let Some(ids) = ids[0].as_fixed_size_binary_opt() else {
                    return exec_err!("{TRACE_ID} of {} is not a fixed-size binary", file.location);
                };
                let sorted = self.cache.trace_ids_sorted(&file.location, row_group);
                rows_of(ids, sorted, wanted)
            }
        };
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<&Field> = self.schema.fields().iter().map(|f| f.as_ref()).collect();
        let columns = self
            .cache
            .columns(&self.store, &file, &metadata, row_group, &fields)
            .await?;
        let whole = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let mut slices = Vec::new();
        for range in ranges {
            let mut start = range.start;
            while start < range.end {
                let len = (range.end - start).min(self.batch_size);
                slices.push(whole.slice(start, len));
                start += len;
            }
        }
        Ok(slices)
    }
}

impl DisplayAs for BlockCacheExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BlockCacheExec: files={}", self.files.len())?;
        if let Some(ids) = &self.trace_ids {
            write!(f, ", trace_ids={}", ids.len())?;
        }
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(f, ", projection=[{}]", columns.join(", "))?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BlockCacheExec {
    leaf_plan_methods!("BlockCacheExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.output_partitioning().partition_count();
        if partition >= partitions {
            return exec_err!("BlockCacheExec has {partitions} partitions, asked for {partition}");
        }
        let wanted = match &self.trace_ids {
            Some(ids) => Some(WantedTraces {
                field: Arc::new(self.table_schema.field_with_name(TRACE_ID)?.clone()),
                ids: ids.clone(),
            }),
            None => None,
        };
        let reader = UnitReader {
            cache: self.cache.clone(),
            store: self.store.clone(),
            schema: self.schema.clone(),
            wanted,
            batch_size: context.session_config().batch_size().max(1),
        };
        let files = self.files.clone();
        let units = futures::stream::once(async move {
            let mut units = Vec::new();
            let mut index = 0;
            for file in files {
                let metadata = reader.cache.metadata(&reader.store, &file).await?;
                for row_group in 0..metadata.metadata().num_row_groups() {
                    if index % partitions == partition {
                        units.push((file.clone(), metadata.clone(), row_group));
                    }
                    index += 1;
                }
            }
            Ok::<_, datafusion::error::DataFusionError>(futures::stream::iter(units).then(
                move |(file, metadata, row_group)| {
                    let reader = reader.clone();
                    async move { reader.read(file, metadata, row_group).await }
                },
            ))
        })
        .try_flatten()
        .map_ok(|slices| futures::stream::iter(slices.into_iter().map(Ok)))
        .try_flatten();
        let mut left = self.limit.unwrap_or(usize::MAX);
        let limited = units.try_take_while(move |batch| {
            let more = left > 0;
            left = left.saturating_sub(batch.num_rows());
            futures::future::ready(Ok(more))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            limited,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Schema};
    use datafusion::physical_plan::collect;
    use object_store::ObjectStoreExt;
    use object_store::local::LocalFileSystem;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    fn ids(values: &[u8]) -> FixedSizeBinaryArray {
        FixedSizeBinaryArray::try_from_iter(values.iter().map(|v| [*v; 16])).expect("ids")
    }

    #[test]
    fn rows_of_finds_each_wanted_trace_and_merges_neighbours() {
        let column = ids(&[1, 1, 2, 4, 4, 4, 7, 9]);
        let wanted = [[1; 16], [2; 16], [4; 16], [8; 16], [9; 16]];
        assert!(is_sorted(&column));
        assert_eq!(rows_of(&column, true, &wanted), vec![0..6, 7..8]);
        assert_eq!(rows_of(&column, false, &wanted), vec![0..6, 7..8]);
        assert_eq!(
            rows_of(&column, true, &[[3; 16]]),
            Vec::<Range<usize>>::new()
        );
    }

    #[test]
    fn rows_of_an_unsorted_column_scans_it() {
        let column = ids(&[4, 1, 4, 2]);
        assert!(!is_sorted(&column));
        assert_eq!(rows_of(&column, false, &[[4; 16]]), vec![0..1, 2..3]);
    }

    /// A Parquet file of 12 rows in row groups of 4, sorted by trace id (two rows a trace),
    /// in a local store.
    async fn block_file() -> (
        tempfile::TempDir,
        Arc<dyn ObjectStore>,
        ObjectMeta,
        SchemaRef,
    ) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let schema = Arc::new(Schema::new(vec![
            Field::new(TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(ids(&[1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])),
                Arc::new(StringArray::from_iter_values(
                    (0..12).map(|i| format!("span {i}")),
                )),
            ],
        )
        .expect("a batch");
        let file = std::fs::File::create(dir.path().join("data.parquet")).expect("created");
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(4))
            .build();
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(properties)).expect("a writer");
        writer.write(&batch).expect("written");
        writer.close().expect("closed");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("a local store"));
        let meta = store
            .head(&Path::from("data.parquet"))
            .await
            .expect("the file");
        (dir, store, meta, schema)
    }

    async fn read(
        cache: &Arc<BlockCache>,
        store: &Arc<dyn ObjectStore>,
        file: &ObjectMeta,
        schema: &SchemaRef,
        projection: Option<Vec<usize>>,
        trace_ids: Option<Vec<TraceId>>,
    ) -> Vec<String> {
        let plan = BlockCacheExec::new(
            vec![file.clone()],
            schema.clone(),
            projection,
            trace_ids,
            None,
            2,
            cache.clone(),
            store.clone(),
        )
        .expect("a plan");
        let batches = collect(Arc::new(plan), Arc::new(TaskContext::default()))
            .await
            .expect("the plan runs");
        let mut names = Vec::new();
        for batch in &batches {
            let column = batch.column_by_name("name").expect("names are read");
            names.extend(column.as_string::<i32>().iter().flatten().map(String::from));
        }
        names.sort();
        names
    }

    #[tokio::test]
    async fn scans_keep_the_columns_they_decode_and_lookups_take_only_their_traces() {
        let (_dir, store, file, schema) = block_file().await;
        let cache = Arc::new(BlockCache::new(1 << 30));
        assert!(!cache.is_hot(&file.location));

        let all = read(&cache, &store, &file, &schema, Some(vec![1]), None).await;
        assert_eq!(all.len(), 12);
        assert_eq!(
            cache.hits_and_misses(),
            (0, 3),
            "one column of each row group decoded"
        );
        assert!(cache.is_hot(&file.location));

        let again = read(&cache, &store, &file, &schema, Some(vec![1]), None).await;
        assert_eq!(again, all);
        assert_eq!(
            cache.hits_and_misses(),
            (3, 3),
            "the second scan decodes nothing"
        );

        // Traces 2 and 5 live in row groups 0 and 2; row group 1 is skipped by its statistics.
        let found = read(
            &cache,
            &store,
            &file,
            &schema,
            None,
            Some(vec![[5; 16], [2; 16]]),
        )
        .await;
        assert_eq!(found, ["span 2", "span 3", "span 8", "span 9"]);
    }

    #[tokio::test]
    async fn the_least_recently_used_columns_go_when_the_budget_is_passed() {
        let (_dir, store, file, schema) = block_file().await;
        let cache = Arc::new(BlockCache::new(1));
        let all = read(&cache, &store, &file, &schema, None, None).await;
        assert_eq!(
            all.len(),
            12,
            "answers are whole even when nothing can be kept"
        );
        assert_eq!(cache.bytes(), 0);
        assert!(!cache.is_hot(&file.location));
    }
}
