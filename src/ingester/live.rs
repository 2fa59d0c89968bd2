//! The ingester's live data: open traces still receiving spans, and cut blocks that are being
//! written or were committed less than a grace period ago.
//!
//! Committed blocks stay here, tagged with their block id, so that a reader who listed blocks
//! before the commit still sees those rows live; a reader that lists the block excludes it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::live::LiveScan;
use crate::schema::{SpanId, SpanRow, TraceId};

/// One trace still receiving spans, deduplicated by span id.
#[derive(Debug, Clone)]
pub struct LiveTrace {
    pub spans: BTreeMap<SpanId, Arc<SpanRow>>,
    pub last_append: Instant,
    pub bytes: usize,
}

/// Complete traces cut into a block for one tenant and shard.
#[derive(Debug)]
pub struct PendingBlock {
    pub tenant: String,
    pub shard: u32,
    pub block_id: String,
    /// Traces sorted by trace id.
    pub traces: Vec<(TraceId, LiveTrace)>,
    committed_at: OnceLock<Instant>,
}

impl PendingBlock {
    /// Each trace's spans, sorted by start time then span id: the block's row order.
    pub fn sorted_traces(&self) -> Vec<Vec<&SpanRow>> {
        self.traces.iter().map(|(_, t)| sorted_spans(t)).collect()
    }

    /// Marks the block committed; from now on readers that list it exclude it here.
    pub fn mark_committed(&self, at: Instant) {
        let _ = self.committed_at.set(at);
    }

    fn committed(&self) -> bool {
        self.committed_at.get().is_some()
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

#[derive(Debug, Default)]
struct TenantLive {
    open: HashMap<TraceId, LiveTrace>,
    pending: Vec<Arc<PendingBlock>>,
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
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in trace_id {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// A selection of live traces for a reader.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub exclude_blocks: HashSet<String>,
    pub trace_ids: Option<HashSet<TraceId>>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
}

impl From<&LiveScan> for Selection {
    fn from(scan: &LiveScan) -> Self {
        Self {
            exclude_blocks: scan.exclude_blocks.iter().cloned().collect(),
            trace_ids: scan
                .trace_ids
                .as_ref()
                .map(|ids| ids.iter().copied().collect()),
            start_ns: scan.start_ns,
            end_ns: scan.end_ns,
        }
    }
}

impl Selection {
    fn wants(&self, id: &TraceId, trace: &LiveTrace) -> bool {
        if self.trace_ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
            return false;
        }
        trace.spans.values().any(|s| {
            self.start_ns
                .is_none_or(|start| s.start_time_unix_nano >= start)
                && self.end_ns.is_none_or(|end| s.start_time_unix_nano < end)
        })
    }
}

/// Live data of every tenant.
#[derive(Debug, Default)]
pub struct LiveState {
    tenants: HashMap<String, TenantLive>,
}

impl LiveState {
    /// Adds spans to their open traces; a span id seen before replaces the earlier copy.
    pub fn insert(&mut self, tenant: &str, spans: Vec<SpanRow>, now: Instant) {
        let live = self.tenants.entry(tenant.to_string()).or_default();
        for span in spans {
            let trace = live.open.entry(span.trace_id).or_insert_with(|| LiveTrace {
                spans: BTreeMap::new(),
                last_append: now,
                bytes: 0,
            });
            trace.last_append = now;
            trace.bytes += span.approx_bytes();
            trace.spans.insert(span.span_id, Arc::new(span));
        }
    }

    fn complete(trace: &LiveTrace, now: Instant, policy: &CutPolicy) -> bool {
        now.saturating_duration_since(trace.last_append) >= policy.trace_idle
    }

    /// True when complete traces are big or old enough to be cut into blocks.
    pub fn should_cut(&self, now: Instant, policy: &CutPolicy) -> bool {
        let mut bytes = 0;
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

    /// Moves complete traces (every trace when `all`) into pending blocks, one per tenant and
    /// shard, and lists the spans of the traces that stay open.
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
            for (shard, mut traces) in by_shard {
                traces.sort_by_key(|a| a.0);
                let block = Arc::new(PendingBlock {
                    tenant: tenant.clone(),
                    shard,
                    block_id: uuid::Uuid::now_v7().to_string(),
                    traces,
                    committed_at: OnceLock::new(),
                });
                live.pending.push(block.clone());
                cut.blocks.push(block);
            }
            if !relog.is_empty() {
                cut.relog.push((tenant.clone(), relog));
            }
        }
        cut
    }

    /// Puts the traces of a block that could not be written back among the open traces.
    pub fn restore(&mut self, block: &Arc<PendingBlock>) {
        let Some(live) = self.tenants.get_mut(&block.tenant) else {
            return;
        };
        live.pending.retain(|p| !Arc::ptr_eq(p, block));
        for (id, trace) in &block.traces {
            let open = live.open.entry(*id).or_insert_with(|| LiveTrace {
                spans: BTreeMap::new(),
                last_append: trace.last_append,
                bytes: 0,
            });
            for (span_id, span) in &trace.spans {
                if open.spans.insert(*span_id, span.clone()).is_none() {
                    open.bytes += span.approx_bytes();
                }
            }
        }
    }

    /// Drops committed blocks older than the grace period.
    pub fn expire(&mut self, now: Instant, grace: Duration) {
        for live in self.tenants.values_mut() {
            live.pending.retain(|p| {
                p.committed_at
                    .get()
                    .is_none_or(|at| now.saturating_duration_since(*at) < grace)
            });
        }
        self.tenants
            .retain(|_, live| !live.open.is_empty() || !live.pending.is_empty());
    }

    /// The traces a reader should see live: open traces and pending blocks it has not listed.
    /// Returns cheap clones; batches are built outside the lock.
    pub fn select(&self, tenant: &str, selection: &Selection) -> Vec<LiveTrace> {
        let Some(live) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let pending = live
            .pending
            .iter()
            .filter(|p| !(p.committed() && selection.exclude_blocks.contains(&p.block_id)));
        let traces = live
            .open
            .iter()
            .chain(pending.flat_map(|p| p.traces.iter().map(|(id, t)| (id, t))));
        traces
            .filter(|(id, t)| selection.wants(id, t))
            .map(|(_, t)| t.clone())
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
                        .flat_map(|p| p.traces.iter())
                        .map(|(_, x)| x.spans.len())
                        .sum::<usize>()
            })
            .sum()
    }
}
