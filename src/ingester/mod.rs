//! The ingester: makes accepted spans durable in the WAL, holds them live, and flushes complete
//! traces to Parquet blocks.
//!
//! The write path, top to bottom:
//! 1. [`Ingester::push`] encodes the spans, appends them to the WAL and waits for the fsync;
//! 2. only then inserts them into the live state, where readers see them, and acknowledges;
//! 3. the flusher ([`Ingester::flush`]) rotates the WAL, cuts complete traces into blocks,
//!    writes the traces that stay open into the new segment, writes and commits each block, and
//!    finally deletes the WAL segments the blocks made redundant.
//!
//! Replay skips a record for a tenant and shard when a committed block of that tenant and shard
//! covers the record's segment (`wal_through`), so a crash at any point of a flush neither loses
//! nor duplicates acknowledged spans. Changing the shard count needs a graceful shutdown first,
//! which flushes everything and leaves the WAL empty.
//!
//! Readers reach live rows only through [`crate::live::LiveSource`], which the ingester
//! implements; it knows nothing of tables or queries.

pub mod live;
mod wal;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock as AsyncRwLock;

use crate::live::{LiveScan, LiveSource};
use crate::schema::{self, SpanRow, TableKind, TraceId};
use crate::storage::{BlockData, Catalog, Storage, StorageError};
pub use live::{CutPolicy, Selection, shard_of};
use live::{LiveState, PendingBlock};
pub use wal::WalError;

/// Ingester settings.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    pub wal_dir: PathBuf,
    pub policy: CutPolicy,
    /// How long committed blocks stay readable live for readers that listed blocks before.
    pub flushed_grace: Duration,
    /// How often the flusher checks whether to cut.
    pub flush_check: Duration,
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
}

/// The payload of one WAL record: spans of one tenant.
#[derive(Debug, Serialize, Deserialize)]
struct WalEntry {
    tenant: String,
    spans: Vec<SpanRow>,
}

/// What opening the ingester found in the WAL.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub spans_replayed: usize,
    pub spans_skipped: usize,
    pub torn_tails: usize,
    pub quarantined: Vec<PathBuf>,
}

/// What one flush did.
#[derive(Debug, Default, Clone)]
pub struct FlushReport {
    pub blocks: usize,
    pub spans: usize,
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
        let mut covered: HashMap<(String, u32), Option<u64>> = HashMap::new();
        for record in &replayed.records {
            let entry: WalEntry = match postcard::from_bytes(&record.payload) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(segment = record.segment, error = %e, "undecodable WAL record skipped");
                    continue;
                }
            };
            let (keep, skip): (Vec<_>, Vec<_>) = entry.spans.into_iter().partition(|span| {
                let shard = shard_of(&span.trace_id, config.policy.shards);
                let through = *covered
                    .entry((entry.tenant.clone(), shard))
                    .or_insert_with(|| catalog.wal_through(&entry.tenant, shard));
                through.is_none_or(|t| record.segment > t)
            });
            report.spans_replayed += keep.len();
            report.spans_skipped += skip.len();
            state.insert(&entry.tenant, keep, now);
        }
        let wal = if read_only {
            None
        } else {
            let next = replayed.last_segment.max(catalog.max_wal_through()) + 1;
            Some(wal::Wal::open(&config.wal_dir, next)?)
        };
        if report.spans_replayed > 0 || !report.quarantined.is_empty() {
            tracing::info!(
                replayed = report.spans_replayed,
                skipped = report.spans_skipped,
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
        let wal = self.wal.as_ref().ok_or(IngesterError::ReadOnly)?;
        if spans.is_empty() {
            return Ok(0);
        }
        let count = spans.len();
        let entry = WalEntry {
            tenant: tenant.to_string(),
            spans,
        };
        let payload = postcard::to_stdvec(&entry)?;
        let _gate = self.gate.read().await;
        wal.append(payload).await?;
        self.live.lock().insert(tenant, entry.spans, Instant::now());
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
        self.live
            .lock()
            .expire(Instant::now(), self.config.flushed_grace);
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
            let payload = postcard::to_stdvec(&WalEntry { tenant, spans })?;
            if let Err(e) = wal.append(payload).await {
                self.restore(&cut.blocks);
                return Err(e.into());
            }
        }
        let mut report = FlushReport::default();
        for (i, block) in cut.blocks.iter().enumerate() {
            match self.commit_block(block, closed).await {
                Ok(spans) => {
                    report.blocks += 1;
                    report.spans += spans;
                }
                Err(e) => {
                    self.restore(&cut.blocks[i..]);
                    return Err(e);
                }
            }
        }
        wal.remove_through(closed).await?;
        Ok(report)
    }

    fn restore(&self, blocks: &[Arc<PendingBlock>]) {
        let mut live = self.live.lock();
        for block in blocks {
            live.restore(block);
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
        let spans = meta.span_count as usize;
        self.catalog.add(meta);
        block.mark_committed(Instant::now());
        Ok(spans)
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
                spans = report.spans,
                "flushed on shutdown"
            ),
            Err(e) => {
                tracing::error!(error = %e, "flush on shutdown failed; the WAL keeps the data")
            }
        }
    }
}

fn block_data(block: &PendingBlock) -> Result<BlockData, StorageError> {
    let traces = block.sorted_traces();
    let spans_batch = schema::spans::to_batch(&traces)?;
    let traces_batch = schema::traces::to_batch(&traces)?;
    let starts = traces.iter().flatten().map(|s| s.start_time_unix_nano);
    let ids: Vec<TraceId> = block.traces.iter().map(|(id, _)| *id).collect();
    Ok(BlockData {
        tenant: block.tenant.clone(),
        shard: block.shard,
        block_id: block.block_id.clone(),
        min_start_ns: starts.clone().min().unwrap_or_default(),
        max_start_ns: starts.max().unwrap_or_default(),
        min_trace_id: ids.first().copied().unwrap_or_default(),
        max_trace_id: ids.last().copied().unwrap_or_default(),
        trace_count: ids.len() as u64,
        spans: spans_batch,
        traces: traces_batch,
    })
}

impl LiveSource for Ingester {
    fn scan(&self, request: &LiveScan) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
        let selection = Selection::from(request);
        let traces = self.live.lock().select(&request.tenant, &selection);
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let sorted: Vec<Vec<&SpanRow>> = traces.iter().map(live::sorted_spans).collect();
        let batch = match request.table {
            TableKind::Spans => schema::spans::to_batch(&sorted)?,
            TableKind::Traces => schema::traces::to_batch(&sorted)?,
        };
        Ok(vec![batch])
    }
}
