//! The ingester: makes accepted spans, log records and metric points durable in the WAL, holds
//! them live, and flushes them to Parquet blocks.
//!
//! The write path, top to bottom:
//! 1. [`Ingester::push`] (spans), [`Ingester::push_logs`] and [`Ingester::push_points`] refuse
//!    what would take the tenant past its live limit, encode the rows, append them to the WAL
//!    and wait for the fsync;
//! 2. only then insert them into the live state, where readers see them, and acknowledge;
//! 3. the flusher ([`Ingester::flush`]) rotates the WAL, cuts complete traces and every log
//!    record and point into blocks, writes the traces that stay open into the new segment,
//!    writes and commits each block, and finally deletes the WAL segments the blocks made
//!    redundant.
//!
//! Replay skips a row for a tenant, signal and shard when a committed block of that tenant,
//! signal and shard covers the record's segment (`wal_through`), so a crash at any point of a
//! flush neither loses nor duplicates acknowledged rows. Changing the shard count needs a graceful shutdown first,
//! which flushes everything and leaves the WAL empty.
//!
//! Readers reach live rows only through [`crate::live::LiveSource`], which the ingester
//! implements; it knows nothing of tables or queries.

mod batches;
pub mod live;
mod pins;
mod wal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock as AsyncRwLock;

use crate::live::{LiveScan, LiveSource};
use crate::schema::{self, LogRow, PointRow, Signal, SpanRow, TableKind, TraceId};
use crate::storage::{BlockData, Catalog, Storage, StorageError};
use batches::TraceBatches;
use live::{BlockRows, LiveState, OpenPart, PendingBlock};
pub use live::{CutPolicy, Selection, log_shard, point_shard, shard_of};
pub use wal::{WalError, oldest_segment as oldest_wal_segment};

/// Ingester settings.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    pub wal_dir: PathBuf,
    pub policy: CutPolicy,
    /// How long, at most, committed blocks stay readable live for readers that listed blocks
    /// before.
    pub flushed_grace: Duration,
    /// How often the flusher checks whether to cut.
    pub flush_check: Duration,
    /// Most bytes one tenant may hold live and not yet cut; pushes past it are refused.
    pub max_live_bytes_per_tenant: usize,
}

/// Errors of the ingester.
#[derive(Debug, thiserror::Error)]
pub enum IngesterError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("wal record: {0}")]
    Encoding(#[from] postcard::Error),
    #[error("this ingester is read-only")]
    ReadOnly,
    #[error(
        "tenant {tenant:?} holds {held} bytes not yet flushed; this request would pass the \
         limit of {limit} bytes: retry after a flush"
    )]
    LiveLimit {
        tenant: String,
        held: usize,
        limit: usize,
    },
}

/// The rows of one WAL record.
#[derive(Debug, Serialize, Deserialize)]
enum WalRows {
    Spans(Vec<SpanRow>),
    Logs(Vec<LogRow>),
    Points(Vec<PointRow>),
}

/// The payload of one WAL record: rows of one signal of one tenant.
#[derive(Debug, Serialize, Deserialize)]
struct WalEntry {
    tenant: String,
    rows: WalRows,
}

/// The payload of a record in WAL format 2: spans of one tenant.
#[derive(Debug, Deserialize)]
struct WalEntryV2 {
    tenant: String,
    spans: Vec<SpanRow>,
}

impl WalEntry {
    fn decode(record: &wal::Record) -> Result<Self, postcard::Error> {
        if record.format == wal::FORMAT {
            return postcard::from_bytes(&record.payload);
        }
        let v2: WalEntryV2 = postcard::from_bytes(&record.payload)?;
        Ok(WalEntry {
            tenant: v2.tenant,
            rows: WalRows::Spans(v2.spans),
        })
    }

    fn rows(&self) -> usize {
        match &self.rows {
            WalRows::Spans(rows) => rows.len(),
            WalRows::Logs(rows) => rows.len(),
            WalRows::Points(rows) => rows.len(),
        }
    }

    fn approx_bytes(&self) -> usize {
        match &self.rows {
            WalRows::Spans(rows) => rows.iter().map(SpanRow::approx_bytes).sum(),
            WalRows::Logs(rows) => rows.iter().map(LogRow::approx_bytes).sum(),
            WalRows::Points(rows) => rows.iter().map(PointRow::approx_bytes).sum(),
        }
    }
}

/// What opening the ingester found in the WAL.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    /// Rows of every signal replayed into the live state.
    pub rows_replayed: usize,
    /// Rows skipped because a committed block already holds them.
    pub rows_skipped: usize,
    pub torn_tails: usize,
    pub quarantined: Vec<PathBuf>,
}

/// What one flush did.
#[derive(Debug, Default, Clone)]
pub struct FlushReport {
    pub blocks: usize,
    /// Rows of every signal written to blocks.
    pub rows: usize,
}

/// Accepts spans, keeps them durable and live, and flushes them to blocks.
#[derive(Debug)]
pub struct Ingester {
    config: IngesterConfig,
    /// `None` when opened read-only (a data directory inspected by `spanlake sql`).
    wal: Option<wal::Wal>,
    /// Pushes hold it shared from WAL append to live insert; a flush holds it exclusively while
    /// it rotates the WAL and cuts, so no acknowledged span falls between the two.
    gate: AsyncRwLock<()>,
    /// Serialises flushes.
    flush_lock: tokio::sync::Mutex<()>,
    live: parking_lot::Mutex<LiveState>,
    /// Readers' pins on committed blocks' live rows.
    pins: Arc<pins::Pins>,
    storage: Storage,
    catalog: Arc<Catalog>,
    replay: ReplayReport,
}

impl Ingester {
    /// Replays the WAL and, unless `read_only`, starts a writer on a fresh segment.
    pub fn open(
        config: IngesterConfig,
        storage: Storage,
        catalog: Arc<Catalog>,
        read_only: bool,
    ) -> Result<Self, IngesterError> {
        let replayed = wal::replay(&config.wal_dir)?;
        let mut report = ReplayReport {
            torn_tails: replayed.torn_tails,
            quarantined: replayed.quarantined.clone(),
            ..Default::default()
        };
        let mut state = LiveState::default();
        let now = Instant::now();
        let mut covered: HashMap<(String, Signal, u32), Option<u64>> = HashMap::new();
        for record in &replayed.records {
            let entry = match WalEntry::decode(record) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(segment = record.segment, error = %e, "undecodable WAL record skipped");
                    continue;
                }
            };
            let total = entry.rows();
            let tenant = entry.tenant;
            let mut keeps = |signal: Signal, shard: u32| {
                let through = *covered
                    .entry((tenant.clone(), signal, shard))
                    .or_insert_with(|| catalog.wal_through(&tenant, signal, shard));
                through.is_none_or(|t| record.segment > t)
            };
            let shards = config.policy.shards;
            let kept = match entry.rows {
                WalRows::Spans(rows) => {
                    let keep: Vec<_> = rows
                        .into_iter()
                        .filter(|s| keeps(Signal::Traces, shard_of(&s.trace_id, shards)))
                        .collect();
                    let n = keep.len();
                    state.insert(&tenant, keep, now);
                    n
                }
                WalRows::Logs(rows) => {
                    let keep: Vec<_> = rows
                        .into_iter()
                        .filter(|l| keeps(Signal::Logs, log_shard(l, shards)))
                        .collect();
                    let n = keep.len();
                    state.insert_logs(&tenant, keep, now);
                    n
                }
                WalRows::Points(rows) => {
                    let keep: Vec<_> = rows
                        .into_iter()
                        .filter(|p| keeps(Signal::Metrics, point_shard(p, shards)))
                        .collect();
                    let n = keep.len();
                    state.insert_points(&tenant, keep, now);
                    n
                }
            };
            report.rows_replayed += kept;
            report.rows_skipped += total - kept;
        }
        let wal = if read_only {
            None
        } else {
            let next = replayed.last_segment.max(catalog.max_wal_through()) + 1;
            Some(wal::Wal::open(&config.wal_dir, next)?)
        };
        if report.rows_replayed > 0 || !report.quarantined.is_empty() {
            tracing::info!(
                replayed = report.rows_replayed,
                skipped = report.rows_skipped,
                torn_tails = report.torn_tails,
                quarantined = report.quarantined.len(),
                "WAL replayed"
            );
        }
        Ok(Self {
            config,
            wal,
            gate: AsyncRwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            live: parking_lot::Mutex::new(state),
            pins: Arc::default(),
            storage,
            catalog,
            replay: report,
        })
    }

    /// What replay found at open.
    pub fn replay_report(&self) -> &ReplayReport {
        &self.replay
    }

    /// Makes spans durable, then visible. Returns once they survive a crash.
    pub async fn push(&self, tenant: &str, spans: Vec<SpanRow>) -> Result<usize, IngesterError> {
        self.append(tenant, WalRows::Spans(spans)).await
    }

    /// Makes log records durable, then visible. Returns once they survive a crash.
    pub async fn push_logs(&self, tenant: &str, logs: Vec<LogRow>) -> Result<usize, IngesterError> {
        self.append(tenant, WalRows::Logs(logs)).await
    }

    /// Makes metric points durable, then visible. Returns once they survive a crash.
    pub async fn push_points(
        &self,
        tenant: &str,
        points: Vec<PointRow>,
    ) -> Result<usize, IngesterError> {
        self.append(tenant, WalRows::Points(points)).await
    }

    async fn append(&self, tenant: &str, rows: WalRows) -> Result<usize, IngesterError> {
        let wal = self.wal.as_ref().ok_or(IngesterError::ReadOnly)?;
        let entry = WalEntry {
            tenant: tenant.to_string(),
            rows,
        };
        let count = entry.rows();
        if count == 0 {
            return Ok(0);
        }
        let limit = self.config.max_live_bytes_per_tenant;
        let held = self.live.lock().open_bytes(tenant);
        if held.saturating_add(entry.approx_bytes()) > limit {
            return Err(IngesterError::LiveLimit {
                tenant: tenant.to_string(),
                held,
                limit,
            });
        }
        let payload = postcard::to_stdvec(&entry)?;
        let _gate = self.gate.read().await;
        wal.append(payload).await?;
        let now = Instant::now();
        let mut live = self.live.lock();
        match entry.rows {
            WalRows::Spans(rows) => live.insert(tenant, rows, now),
            WalRows::Logs(rows) => live.insert_logs(tenant, rows, now),
            WalRows::Points(rows) => live.insert_points(tenant, rows, now),
        }
        Ok(count)
    }

    /// Number of spans held live.
    pub fn live_span_count(&self) -> usize {
        self.live.lock().span_count()
    }

    /// Cuts complete traces into blocks when due (every trace when `all`), writes and commits
    /// them, and trims the WAL.
    pub async fn flush(&self, all: bool) -> Result<FlushReport, IngesterError> {
        let wal = self.wal.as_ref().ok_or(IngesterError::ReadOnly)?;
        let _one_at_a_time = self.flush_lock.lock().await;
        self.release_committed();
        if !all
            && !self
                .live
                .lock()
                .should_cut(Instant::now(), &self.config.policy)
        {
            return Ok(FlushReport::default());
        }
        let (closed, cut) = {
            let _gate = self.gate.write().await;
            let closed = wal.rotate().await?;
            let cut = self
                .live
                .lock()
                .cut(Instant::now(), &self.config.policy, all);
            (closed, cut)
        };
        for (tenant, spans) in cut.relog {
            let rows = WalRows::Spans(spans);
            let payload = postcard::to_stdvec(&WalEntry { tenant, rows })?;
            if let Err(e) = wal.append(payload).await {
                self.restore(&cut.blocks);
                return Err(e.into());
            }
        }
        // A block that cannot be written goes back live and stays in the WAL; the others are
        // committed all the same, so one tenant's or shard's trouble holds up no one else.
        let mut report = FlushReport::default();
        let mut first_error = None;
        for block in &cut.blocks {
            match self.commit_block(block, closed).await {
                Ok(rows) => {
                    report.blocks += 1;
                    report.rows += rows;
                }
                Err(e) => {
                    tracing::error!(
                        tenant = %block.tenant,
                        signal = block.signal().name(),
                        shard = block.shard,
                        error = %e,
                        "block not written; its rows stay live and in the WAL"
                    );
                    self.restore(std::slice::from_ref(block));
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // The closed segments still hold the rows put back: keep them.
            return Err(e);
        }
        wal.remove_through(closed).await?;
        self.release_committed();
        Ok(report)
    }

    /// Releases the live rows of committed blocks no reader still needs.
    fn release_committed(&self) {
        self.live
            .lock()
            .release(Instant::now(), self.config.flushed_grace, &self.pins);
    }

    /// Number of pins readers hold, for tests.
    pub fn pins_held(&self) -> usize {
        self.pins.held()
    }

    fn restore(&self, blocks: &[Arc<PendingBlock>]) {
        let mut live = self.live.lock();
        for block in blocks {
            live.restore(block, Instant::now());
        }
    }

    async fn commit_block(
        &self,
        block: &Arc<PendingBlock>,
        wal_through: u64,
    ) -> Result<usize, IngesterError> {
        let data = {
            let block = block.clone();
            tokio::task::spawn_blocking(move || block_data(&block))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??
        };
        let meta = self.storage.write_block(&data, wal_through).await?;
        let rows = meta.rows as usize;
        self.catalog.add(meta);
        block.mark_committed(Instant::now(), self.pins.committed());
        Ok(rows)
    }

    /// Runs flushes every `flush_check` until `stop` resolves, then flushes everything.
    pub async fn run_flusher(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config.flush_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {
                    if let Err(e) = self.flush(false).await {
                        tracing::error!(error = %e, "flush failed; the data stays live and in the WAL");
                    }
                }
            }
        }
        match self.flush(true).await {
            Ok(report) => tracing::info!(
                blocks = report.blocks,
                rows = report.rows,
                "flushed on shutdown"
            ),
            Err(e) => {
                tracing::error!(error = %e, "flush on shutdown failed; the WAL keeps the data")
            }
        }
    }
}

fn block_data(block: &PendingBlock) -> Result<BlockData, StorageError> {
    let (data, traces, times, trace_ids, names): (_, _, Vec<i64>, Vec<TraceId>, Vec<String>) =
        match &block.rows {
            BlockRows::Traces(traces) => {
                let batches = block.batches()?;
                (
                    batches.spans().clone(),
                    Some(batches.traces().clone()),
                    batches.starts().to_vec(),
                    traces.iter().map(|(id, _)| *id).collect(),
                    Vec::new(),
                )
            }
            BlockRows::Logs(rows) => {
                let mut rows: Vec<&LogRow> = rows.iter().map(Arc::as_ref).collect();
                rows.sort_by(|a, b| {
                    (a.service_name.as_str(), a.time_unix_nano)
                        .cmp(&(b.service_name.as_str(), b.time_unix_nano))
                });
                (
                    schema::logs::to_batch(&rows)?,
                    None,
                    rows.iter().map(|l| l.time_unix_nano).collect(),
                    rows.iter().filter_map(|l| l.trace_id).collect(),
                    rows.iter().map(|l| l.service_name.clone()).collect(),
                )
            }
            BlockRows::Points(rows) => {
                let mut rows: Vec<(u64, &PointRow)> =
                    rows.iter().map(|p| (p.series_id(), p.as_ref())).collect();
                rows.sort_by(|(sa, a), (sb, b)| {
                    (a.metric_name.as_str(), sa, a.time_unix_nano).cmp(&(
                        b.metric_name.as_str(),
                        sb,
                        b.time_unix_nano,
                    ))
                });
                let rows: Vec<&PointRow> = rows.into_iter().map(|(_, p)| p).collect();
                (
                    schema::metrics::to_batch(&rows)?,
                    None,
                    rows.iter().map(|p| p.time_unix_nano).collect(),
                    Vec::new(),
                    rows.iter().map(|p| p.metric_name.clone()).collect(),
                )
            }
        };
    let mut names = names;
    names.sort_unstable();
    names.dedup();
    let trace_id_range = trace_ids
        .iter()
        .min()
        .zip(trace_ids.iter().max())
        .map(|(min, max)| (*min, *max));
    Ok(BlockData {
        tenant: block.tenant.clone(),
        signal: block.signal(),
        shard: block.shard,
        block_id: block.block_id.clone(),
        min_time_ns: times.iter().copied().min().unwrap_or_default(),
        max_time_ns: times.iter().copied().max().unwrap_or_default(),
        trace_id_range,
        trace_count: block.traces().len() as u64,
        names,
        data,
        traces,
        compaction_level: 0,
        compacted_from: Vec::new(),
    })
}

/// Above this many trace ids a scan reads the tenant's live traces in Arrow form (converted
/// once and shared) rather than converting the selected traces alone.
const MAX_CONVERTED_IDS: usize = 1000;

impl Ingester {
    /// Live `spans` or `traces` rows of many traces: the open traces converted at most once
    /// per change, each pending block once, both cut to the selection.
    fn scan_traces(
        &self,
        request: &LiveScan,
        selection: &Selection,
    ) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        let snapshot = self.live.lock().trace_snapshot(&request.tenant, selection);
        let mut out = Vec::new();
        if let Some((base, stale)) = &snapshot.open.base {
            out.extend(base.select_except(request.table, selection, stale)?);
        }
        let rest = match snapshot.open.rest {
            None => None,
            Some(OpenPart::Built(batches)) => Some(batches),
            Some(OpenPart::Copied { version, traces }) => {
                let batches = Arc::new(TraceBatches::build(traces.iter().map(|(id, t)| (id, t)))?);
                self.live
                    .lock()
                    .keep_open_batches(&request.tenant, version, batches.clone());
                Some(batches)
            }
        };
        if let Some(rest) = rest {
            out.extend(rest.select(request.table, selection)?);
        }
        for block in snapshot.pending {
            out.extend(block.batches()?.select(request.table, selection)?);
        }
        Ok(out)
    }
}

impl LiveSource for Ingester {
    fn scan(&self, request: &LiveScan) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        let selection = Selection::new(request, self.config.policy.shards);
        let batch = match request.table {
            TableKind::Spans | TableKind::Traces => {
                if selection
                    .trace_ids
                    .as_ref()
                    .is_none_or(|ids| ids.len() > MAX_CONVERTED_IDS)
                {
                    return self.scan_traces(request, &selection);
                }
                let traces = self.live.lock().select(&request.tenant, &selection);
                if traces.is_empty() {
                    return Ok(Vec::new());
                }
                let sorted: Vec<Vec<&SpanRow>> = traces.iter().map(live::sorted_spans).collect();
                if request.table == TableKind::Spans {
                    schema::spans::to_batch(&sorted)?
                } else {
                    schema::traces::to_batch(&sorted)?
                }
            }
            TableKind::Logs => {
                let logs = self.live.lock().select_logs(&request.tenant, &selection);
                if logs.is_empty() {
                    return Ok(Vec::new());
                }
                let rows: Vec<&LogRow> = logs.iter().map(Arc::as_ref).collect();
                schema::logs::to_batch(&rows)?
            }
            TableKind::Metrics => {
                let points = self.live.lock().select_points(&request.tenant, &selection);
                if points.is_empty() {
                    return Ok(Vec::new());
                }
                let rows: Vec<&PointRow> = points.iter().map(Arc::as_ref).collect();
                schema::metrics::to_batch(&rows)?
            }
        };
        Ok(vec![batch])
    }

    fn pin(&self) -> Arc<dyn crate::live::LivePin> {
        self.pins.pin()
    }
}
