//! The ingester's live data: open traces still receiving spans, log records and metric points
//! not yet cut, and cut blocks that are being written or were committed less than a grace
//! period ago.
//!
//! Traces are cut once complete (idle); log records and points have no such notion and are cut
//! whole whenever the ingester cuts, so a rotated WAL segment never holds a record that is
//! neither in a block nor re-logged.
//!
//! Committed blocks stay here, tagged with their block id, while a reader who listed blocks
//! before the commit may still read those rows live (see [`super::pins`]); a reader that lists
//! the block excludes it (a block is listed only once committed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::batches::TraceBatches;
use super::pins::Pins;
use crate::live::LiveScan;
use crate::schema::{LogRow, PointRow, Signal, SpanId, SpanRow, TraceId};

/// One trace still receiving spans, deduplicated by span id.
#[derive(Debug, Clone)]
pub struct LiveTrace {
    pub spans: BTreeMap<SpanId, Arc<SpanRow>>,
    pub last_append: Instant,
    pub bytes: usize,
}

/// The rows of a cut block.
#[derive(Debug)]
pub enum BlockRows {
    /// Complete traces, sorted by trace id.
    Traces(Vec<(TraceId, LiveTrace)>),
    /// Log records, in arrival order.
    Logs(Vec<Arc<LogRow>>),
    /// Metric points, in arrival order.
    Points(Vec<Arc<PointRow>>),
}

/// Rows of one signal cut into a block for one tenant and shard.
#[derive(Debug)]
pub struct PendingBlock {
    pub tenant: String,
    pub shard: u32,
    pub block_id: String,
    pub rows: BlockRows,
    /// When the block was committed, and its number among commits (see [`Pins`]).
    committed: OnceLock<(Instant, u64)>,
    /// The block's traces in Arrow form, built by the first reader or the writer.
    batches: OnceLock<Arc<TraceBatches>>,
}

impl PendingBlock {
    fn new(tenant: &str, shard: u32, rows: BlockRows) -> Arc<Self> {
        Arc::new(Self {
            tenant: tenant.to_string(),
            shard,
            block_id: uuid::Uuid::now_v7().to_string(),
            rows,
            committed: OnceLock::new(),
            batches: OnceLock::new(),
        })
    }

    /// The block's traces in Arrow form, converted once.
    pub fn batches(&self) -> Result<Arc<TraceBatches>, arrow::error::ArrowError> {
        if let Some(batches) = self.batches.get() {
            return Ok(batches.clone());
        }
        let built = Arc::new(TraceBatches::build(
            self.traces().iter().map(|(id, t)| (id, t)),
        )?);
        Ok(self.batches.get_or_init(|| built).clone())
    }

    /// The signal of the block's rows.
    pub fn signal(&self) -> Signal {
        match self.rows {
            BlockRows::Traces(_) => Signal::Traces,
            BlockRows::Logs(_) => Signal::Logs,
            BlockRows::Points(_) => Signal::Metrics,
        }
    }

    /// The block's traces; empty for other signals.
    pub fn traces(&self) -> &[(TraceId, LiveTrace)] {
        match &self.rows {
            BlockRows::Traces(traces) => traces,
            _ => &[],
        }
    }

    /// Marks the block committed as number `number`: from now on its rows stay live only for
    /// readers that may have listed blocks before, and at most for the grace period.
    pub fn mark_committed(&self, at: Instant, number: u64) {
        let _ = self.committed.set((at, number));
    }
}

/// A trace's spans in row order.
pub fn sorted_spans(trace: &LiveTrace) -> Vec<&SpanRow> {
    let mut spans: Vec<&SpanRow> = trace.spans.values().map(Arc::as_ref).collect();
    spans.sort_by(|a, b| {
        a.start_time_unix_nano
            .cmp(&b.start_time_unix_nano)
            .then(a.span_id.cmp(&b.span_id))
    });
    spans
}

/// Log records or points not yet cut.
#[derive(Debug)]
struct OpenRows<T> {
    rows: Vec<Arc<T>>,
    bytes: usize,
    first_append: Option<Instant>,
}

impl<T> Default for OpenRows<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            bytes: 0,
            first_append: None,
        }
    }
}

impl<T> OpenRows<T> {
    fn push(&mut self, row: T, bytes: usize, now: Instant) {
        self.first_append.get_or_insert(now);
        self.bytes += bytes;
        self.rows.push(Arc::new(row));
    }

    fn restore(&mut self, rows: &[Arc<T>], bytes: impl Fn(&T) -> usize, at: Instant) {
        self.first_append = Some(self.first_append.map_or(at, |t| t.min(at)));
        self.bytes += rows.iter().map(|r| bytes(r)).sum::<usize>();
        self.rows.extend(rows.iter().cloned());
    }

    fn is_due(&self, now: Instant, policy: &CutPolicy) -> bool {
        self.first_append
            .is_some_and(|t| now.saturating_duration_since(t) >= policy.max_block_age)
    }
}

/// The open traces in Arrow form are built again whole once more than this fraction of them
/// (one in so many) changed since they were; until then readers convert only the changed ones.
const REBUILD_FRACTION: usize = 4;

#[derive(Debug, Default)]
struct TenantLive {
    open: HashMap<TraceId, LiveTrace>,
    logs: OpenRows<LogRow>,
    points: OpenRows<PointRow>,
    pending: Vec<Arc<PendingBlock>>,
    /// Bytes of open traces, log records and points: what the live limit caps.
    open_bytes: usize,
    /// Changes whenever the open traces change.
    open_version: u64,
    /// Every open trace in Arrow form, as a reader last built them all, with the ids of the
    /// traces changed since (spans added, cut or put back): their rows there are stale. The
    /// ids are shared with readers, and copied only when they change while one holds them.
    open_base: Option<(Arc<TraceBatches>, Arc<HashSet<TraceId>>)>,
    /// The open traces among those changed since `open_base`, in Arrow form as of a version,
    /// when a reader built them.
    open_rest: Option<(u64, Arc<TraceBatches>)>,
}

impl TenantLive {
    /// Records that the open traces `ids` changed. A base too stale to be read again is
    /// dropped at once, with the ids it would collect.
    fn open_changed(&mut self, versions: &mut u64, ids: impl IntoIterator<Item = TraceId>) {
        *versions += 1;
        self.open_version = *versions;
        if let Some((_, changed)) = &mut self.open_base {
            Arc::make_mut(changed).extend(ids);
            if self.usable_base().is_none() {
                self.open_base = None;
                self.open_rest = None;
            }
        }
    }

    /// The base to read the open traces from, with its stale ids, unless so many traces
    /// changed since it was built that building them all again costs less than reading
    /// beside it.
    fn usable_base(&self) -> Option<&(Arc<TraceBatches>, Arc<HashSet<TraceId>>)> {
        self.open_base
            .as_ref()
            .filter(|(_, changed)| changed.len() <= self.open.len() / REBUILD_FRACTION)
    }

    fn is_empty(&self) -> bool {
        self.open.is_empty()
            && self.logs.rows.is_empty()
            && self.points.rows.is_empty()
            && self.pending.is_empty()
    }
}

/// What a cut produced: blocks to write, and per tenant the spans of traces that stay open,
/// to be written again to the new WAL segment.
#[derive(Debug, Default)]
pub struct Cut {
    pub blocks: Vec<Arc<PendingBlock>>,
    pub relog: Vec<(String, Vec<SpanRow>)>,
}

/// Limits that decide when traces are complete and blocks are cut.
#[derive(Debug, Clone, Copy)]
pub struct CutPolicy {
    pub trace_idle: Duration,
    pub max_block_bytes: usize,
    pub max_block_age: Duration,
    pub shards: u32,
}

/// Which shard a trace belongs to: FNV-1a of the trace id, modulo the shard count.
pub fn shard_of(trace_id: &TraceId, shards: u32) -> u32 {
    shard_of_bytes(trace_id, shards)
}

fn shard_of_bytes(bytes: &[u8], shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// Which shard a log record belongs to: its trace's, so that a trace and its logs meet on one
/// shard; records without a trace spread by service.
pub fn log_shard(log: &LogRow, shards: u32) -> u32 {
    match &log.trace_id {
        Some(id) => shard_of(id, shards),
        None => shard_of_bytes(log.service_name.as_bytes(), shards),
    }
}

/// Which shard a metric point belongs to: its series', so a series stays on one shard.
pub fn point_shard(point: &PointRow, shards: u32) -> u32 {
    (point.series_id() % u64::from(shards.max(1))) as u32
}

/// A selection of live traces for a reader.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub exclude_blocks: HashSet<String>,
    pub trace_ids: Option<HashSet<TraceId>>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    /// Only rows of these shards (by index, of `shards.len()` shards), when given.
    pub shards: Option<Vec<bool>>,
}

impl Selection {
    /// What `scan` selects on an ingester with `shards` shards.
    pub fn new(scan: &LiveScan, shards: u32) -> Self {
        Self {
            exclude_blocks: scan.exclude_blocks.iter().cloned().collect(),
            trace_ids: scan
                .trace_ids
                .as_ref()
                .map(|ids| ids.iter().copied().collect()),
            start_ns: scan.start_ns,
            end_ns: scan.end_ns,
            shards: scan.shards.as_ref().map(|wanted| {
                let mut set = vec![false; shards.max(1) as usize];
                for &shard in wanted {
                    if let Some(slot) = set.get_mut(shard as usize) {
                        *slot = true;
                    }
                }
                set
            }),
        }
    }

    fn shard_count(&self) -> u32 {
        self.shards.as_ref().map_or(1, |s| s.len() as u32)
    }

    fn in_shard(&self, shard: impl FnOnce(u32) -> u32) -> bool {
        match &self.shards {
            None => true,
            Some(set) => set[shard(self.shard_count()) as usize],
        }
    }

    fn wants(&self, id: &TraceId, trace: &LiveTrace) -> bool {
        if self.trace_ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
            return false;
        }
        if !self.in_shard(|n| shard_of(id, n)) {
            return false;
        }
        trace
            .spans
            .values()
            .any(|s| self.in_time(s.start_time_unix_nano))
    }

    /// As [`Selection::wants`], for a trace whose span start times are given in ascending order.
    pub fn wants_sorted(&self, id: &TraceId, starts: &[i64]) -> bool {
        if self.trace_ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
            return false;
        }
        if !self.in_shard(|n| shard_of(id, n)) {
            return false;
        }
        let first = match self.start_ns {
            Some(start) => starts.partition_point(|s| *s < start),
            None => 0,
        };
        starts.get(first).is_some_and(|s| self.in_time(*s))
    }

    fn in_time(&self, ns: i64) -> bool {
        self.start_ns.is_none_or(|start| ns >= start) && self.end_ns.is_none_or(|end| ns < end)
    }

    fn wants_log(&self, log: &LogRow) -> bool {
        let trace_ok = match &self.trace_ids {
            None => true,
            Some(ids) => log.trace_id.as_ref().is_some_and(|id| ids.contains(id)),
        };
        trace_ok && self.in_time(log.time_unix_nano) && self.in_shard(|n| log_shard(log, n))
    }

    fn wants_point(&self, point: &PointRow) -> bool {
        self.in_time(point.time_unix_nano) && self.in_shard(|n| point_shard(point, n))
    }

    /// A block the reader listed: its rows come from Parquet. A block id reaches a reader's
    /// list only once the block is committed, even before it is marked so here.
    fn excludes(&self, block: &PendingBlock) -> bool {
        self.exclude_blocks.contains(&block.block_id)
    }
}

/// The open traces of a tenant, for a reader.
#[derive(Debug, Default)]
pub struct OpenTraces {
    /// Every open trace as a reader last built them all, and the ids of the traces changed
    /// since, whose rows there are stale and not to be read.
    pub base: Option<(Arc<TraceBatches>, Arc<HashSet<TraceId>>)>,
    /// The open traces the base does not give: all of them without a base, else the changed
    /// ones still open; `None` when there are none.
    pub rest: Option<OpenPart>,
}

/// Some open traces, for a reader.
#[derive(Debug)]
pub enum OpenPart {
    /// Already in Arrow form.
    Built(Arc<TraceBatches>),
    /// A copy of the traces as of `version`, to be converted by the reader, which then offers
    /// the result to [`LiveState::keep_open_batches`].
    Copied {
        version: u64,
        traces: Vec<(TraceId, LiveTrace)>,
    },
}

/// See [`LiveState::trace_snapshot`].
#[derive(Debug, Default)]
pub struct TraceSnapshot {
    pub open: OpenTraces,
    pub pending: Vec<Arc<PendingBlock>>,
}

/// Live data of every tenant.
#[derive(Debug, Default)]
pub struct LiveState {
    tenants: HashMap<String, TenantLive>,
    /// The last version given to a tenant's open traces: versions are never reused, even by
    /// a tenant that left and came back.
    versions: u64,
}

impl LiveState {
    /// Adds spans to their open traces; a span id seen before replaces the earlier copy.
    pub fn insert(&mut self, tenant: &str, spans: Vec<SpanRow>, now: Instant) {
        let live = self.tenants.entry(tenant.to_string()).or_default();
        live.open_changed(&mut self.versions, spans.iter().map(|s| s.trace_id));
        for span in spans {
            let trace = live.open.entry(span.trace_id).or_insert_with(|| LiveTrace {
                spans: BTreeMap::new(),
                last_append: now,
                bytes: 0,
            });
            let bytes = span.approx_bytes();
            trace.last_append = now;
            trace.bytes += bytes;
            live.open_bytes += bytes;
            trace.spans.insert(span.span_id, Arc::new(span));
        }
    }

    /// Adds log records.
    pub fn insert_logs(&mut self, tenant: &str, logs: Vec<LogRow>, now: Instant) {
        let live = self.tenants.entry(tenant.to_string()).or_default();
        for log in logs {
            let bytes = log.approx_bytes();
            live.open_bytes += bytes;
            live.logs.push(log, bytes, now);
        }
    }

    /// Adds metric points.
    pub fn insert_points(&mut self, tenant: &str, points: Vec<PointRow>, now: Instant) {
        let live = self.tenants.entry(tenant.to_string()).or_default();
        for point in points {
            let bytes = point.approx_bytes();
            live.open_bytes += bytes;
            live.points.push(point, bytes, now);
        }
    }

    /// Bytes `tenant` holds open (not yet cut), which the live limit caps.
    pub fn open_bytes(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.open_bytes)
    }

    fn complete(trace: &LiveTrace, now: Instant, policy: &CutPolicy) -> bool {
        now.saturating_duration_since(trace.last_append) >= policy.trace_idle
    }

    /// True when complete traces, log records or points are big or old enough to be cut into
    /// blocks.
    pub fn should_cut(&self, now: Instant, policy: &CutPolicy) -> bool {
        let mut bytes = 0;
        for live in self.tenants.values() {
            if live.logs.is_due(now, policy) || live.points.is_due(now, policy) {
                return true;
            }
            bytes += live.logs.bytes + live.points.bytes;
        }
        for trace in self.tenants.values().flat_map(|t| t.open.values()) {
            if Self::complete(trace, now, policy) {
                if now.saturating_duration_since(trace.last_append)
                    >= policy.trace_idle + policy.max_block_age
                {
                    return true;
                }
                bytes += trace.bytes;
            }
        }
        bytes >= policy.max_block_bytes
    }

    /// Moves complete traces (every trace when `all`) and every log record and point into
    /// pending blocks, one per tenant, signal and shard, and lists the spans of the traces that
    /// stay open.
    pub fn cut(&mut self, now: Instant, policy: &CutPolicy, all: bool) -> Cut {
        let mut cut = Cut::default();
        for (tenant, live) in &mut self.tenants {
            let mut by_shard: BTreeMap<u32, Vec<(TraceId, LiveTrace)>> = BTreeMap::new();
            let mut relog = Vec::new();
            for (id, trace) in std::mem::take(&mut live.open) {
                if all || Self::complete(&trace, now, policy) {
                    by_shard
                        .entry(shard_of(&id, policy.shards))
                        .or_default()
                        .push((id, trace));
                } else {
                    relog.extend(trace.spans.values().map(|s| SpanRow::clone(s)));
                    live.open.insert(id, trace);
                }
            }
            if !by_shard.is_empty() {
                let cut_ids: Vec<TraceId> =
                    by_shard.values().flatten().map(|(id, _)| *id).collect();
                live.open_changed(&mut self.versions, cut_ids);
            }
            let mut blocks = Vec::new();
            for (shard, mut traces) in by_shard {
                traces.sort_by_key(|a| a.0);
                blocks.push(PendingBlock::new(tenant, shard, BlockRows::Traces(traces)));
            }
            let logs = std::mem::take(&mut live.logs).rows;
            for (shard, rows) in by_shard_of(logs, |l| log_shard(l, policy.shards)) {
                blocks.push(PendingBlock::new(tenant, shard, BlockRows::Logs(rows)));
            }
            let points = std::mem::take(&mut live.points).rows;
            for (shard, rows) in by_shard_of(points, |p| point_shard(p, policy.shards)) {
                blocks.push(PendingBlock::new(tenant, shard, BlockRows::Points(rows)));
            }
            live.open_bytes = live.open.values().map(|t| t.bytes).sum();
            live.pending.extend(blocks.iter().cloned());
            cut.blocks.extend(blocks);
            if !relog.is_empty() {
                cut.relog.push((tenant.clone(), relog));
            }
        }
        cut
    }

    /// Puts the rows of a block that could not be written back among the open ones.
    pub fn restore(&mut self, block: &Arc<PendingBlock>, now: Instant) {
        let Some(live) = self.tenants.get_mut(&block.tenant) else {
            return;
        };
        live.pending.retain(|p| !Arc::ptr_eq(p, block));
        let traces = match &block.rows {
            BlockRows::Traces(traces) => traces,
            BlockRows::Logs(rows) => {
                live.logs.restore(rows, LogRow::approx_bytes, now);
                live.open_bytes += rows.iter().map(|r| r.approx_bytes()).sum::<usize>();
                return;
            }
            BlockRows::Points(rows) => {
                live.points.restore(rows, PointRow::approx_bytes, now);
                live.open_bytes += rows.iter().map(|r| r.approx_bytes()).sum::<usize>();
                return;
            }
        };
        live.open_changed(&mut self.versions, traces.iter().map(|(id, _)| *id));
        for (id, trace) in traces {
            let open = live.open.entry(*id).or_insert_with(|| LiveTrace {
                spans: BTreeMap::new(),
                last_append: trace.last_append,
                bytes: 0,
            });
            for (span_id, span) in &trace.spans {
                if open.spans.insert(*span_id, span.clone()).is_none() {
                    open.bytes += span.approx_bytes();
                    live.open_bytes += span.approx_bytes();
                }
            }
        }
    }

    /// Releases the rows of committed blocks that no pin keeps, and of those committed longer
    /// than `grace` ago in any case (the pins that kept those are then no longer intact).
    pub fn release(&mut self, now: Instant, grace: Duration, pins: &Pins) {
        for live in self.tenants.values_mut() {
            live.pending.retain(|p| {
                let Some((at, number)) = p.committed.get() else {
                    return true;
                };
                let keep = now.saturating_duration_since(*at) < grace && !pins.releasable(*number);
                if !keep {
                    // Before the rows go, so a reader that misses them sees its pin broken.
                    pins.released(*number);
                }
                keep
            });
        }
        self.tenants.retain(|_, live| !live.is_empty());
    }

    /// The traces a reader should see live: open traces and pending blocks it has not listed.
    /// Returns cheap clones; batches are built outside the lock.
    pub fn select(&self, tenant: &str, selection: &Selection) -> Vec<LiveTrace> {
        let Some(live) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let pending = live.pending.iter().filter(|p| !selection.excludes(p));
        if let Some(ids) = &selection.trace_ids {
            // Looked up rather than found among every live trace: open traces by id, those
            // of a pending block by binary search (they are sorted by id).
            let pending: Vec<&[(TraceId, LiveTrace)]> = pending.map(|p| p.traces()).collect();
            let mut found = Vec::new();
            for id in ids {
                let open = live.open.get_key_value(id);
                let cut = pending.iter().filter_map(|traces| {
                    let at = traces.binary_search_by_key(id, |(id, _)| *id).ok()?;
                    let (id, trace) = &traces[at];
                    Some((id, trace))
                });
                found.extend(
                    open.into_iter()
                        .chain(cut)
                        .filter(|(id, t)| selection.wants(id, t))
                        .map(|(_, t)| t.clone()),
                );
            }
            return found;
        }
        let traces = live
            .open
            .iter()
            .chain(pending.flat_map(|p| p.traces().iter().map(|(id, t)| (id, t))));
        traces
            .filter(|(id, t)| selection.wants(id, t))
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// What a reader of many traces needs, taken under the lock: the open traces in Arrow form
    /// as far as readers built them, and a copy of the rest to build; and the pending blocks it
    /// has not listed.
    pub fn trace_snapshot(&self, tenant: &str, selection: &Selection) -> TraceSnapshot {
        let Some(live) = self.tenants.get(tenant) else {
            return TraceSnapshot::default();
        };
        let copied = |ids: &mut dyn Iterator<Item = &TraceId>| OpenPart::Copied {
            version: live.open_version,
            traces: ids
                .filter_map(|id| live.open.get_key_value(id))
                .map(|(id, t)| (*id, t.clone()))
                .collect(),
        };
        let open = match live.usable_base() {
            Some((base, changed)) => OpenTraces {
                base: Some((base.clone(), changed.clone())),
                rest: match &live.open_rest {
                    _ if changed.is_empty() => None,
                    Some((version, rest)) if *version == live.open_version => {
                        Some(OpenPart::Built(rest.clone()))
                    }
                    _ => Some(copied(&mut changed.iter())),
                },
            },
            None => OpenTraces {
                base: None,
                rest: Some(copied(&mut live.open.keys())),
            },
        };
        let pending = live
            .pending
            .iter()
            .filter(|p| matches!(p.rows, BlockRows::Traces(_)) && !selection.excludes(p))
            .cloned()
            .collect();
        TraceSnapshot { open, pending }
    }

    /// Keeps `batches`, built from the copy [`trace_snapshot`](Self::trace_snapshot) gave of
    /// the open traces of `version`, for later readers, unless the open traces changed
    /// meanwhile: as the new base when the copy held every open trace, else beside the base.
    pub fn keep_open_batches(&mut self, tenant: &str, version: u64, batches: Arc<TraceBatches>) {
        let Some(live) = self.tenants.get_mut(tenant) else {
            return;
        };
        if live.open_version != version {
            return;
        }
        if live.usable_base().is_some() {
            live.open_rest = Some((version, batches));
        } else {
            live.open_base = Some((batches, Arc::default()));
            live.open_rest = None;
        }
    }

    /// The log records a reader should see live, as [`LiveState::select`] does for traces.
    pub fn select_logs(&self, tenant: &str, selection: &Selection) -> Vec<Arc<LogRow>> {
        let Some(live) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let pending = live.pending.iter().filter(|p| !selection.excludes(p));
        let pending = pending.flat_map(|p| match &p.rows {
            BlockRows::Logs(rows) => rows.as_slice(),
            _ => &[],
        });
        live.logs
            .rows
            .iter()
            .chain(pending)
            .filter(|l| selection.wants_log(l))
            .cloned()
            .collect()
    }

    /// The metric points a reader should see live, as [`LiveState::select`] does for traces.
    pub fn select_points(&self, tenant: &str, selection: &Selection) -> Vec<Arc<PointRow>> {
        let Some(live) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let pending = live.pending.iter().filter(|p| !selection.excludes(p));
        let pending = pending.flat_map(|p| match &p.rows {
            BlockRows::Points(rows) => rows.as_slice(),
            _ => &[],
        });
        live.points
            .rows
            .iter()
            .chain(pending)
            .filter(|p| selection.wants_point(p))
            .cloned()
            .collect()
    }

    /// Number of spans held live (open and pending), for metrics and tests.
    pub fn span_count(&self) -> usize {
        self.tenants
            .values()
            .map(|t| {
                t.open.values().map(|x| x.spans.len()).sum::<usize>()
                    + t.pending
                        .iter()
                        .flat_map(|p| p.traces().iter())
                        .map(|(_, x)| x.spans.len())
                        .sum::<usize>()
            })
            .sum()
    }
}

/// Groups rows by shard, keeping their order within each shard.
fn by_shard_of<T>(rows: Vec<Arc<T>>, shard: impl Fn(&T) -> u32) -> BTreeMap<u32, Vec<Arc<T>>> {
    let mut by_shard: BTreeMap<u32, Vec<Arc<T>>> = BTreeMap::new();
    for row in rows {
        by_shard.entry(shard(&row)).or_default().push(row);
    }
    by_shard
}
