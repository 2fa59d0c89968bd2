//! Trace by id: every span of one trace, found in each tenant's `spans` (the trace-id filter
//! prunes blocks by id range and row groups by bloom filter and statistics), deduplicated and
//! optionally cut down to the spans a TraceQL filter keeps.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};
use datafusion::common::ScalarValue;
use datafusion::prelude::{Expr, SessionContext, col, lit};

use super::traceql::{self as lower, Lowerer};
use super::{QueryEngine, QueryError, Result};
use crate::schema::to_otlp::rows_from_batch;
use crate::schema::{SpanId, SpanRow, TableKind, TraceId, spans};
use crate::time::TimeRange;
use crate::traceql::ast::{Body, SpansetExpr, Stage};
use crate::traceql::{self, Query};

/// A trace-by-id request.
#[derive(Debug, Clone)]
pub struct TraceRequest {
    /// The trace.
    pub id: TraceId,
    /// When given, the trace is found only if one of its spans overlaps this window.
    pub range: Option<TimeRange>,
    /// When given, only the spans it keeps.
    pub filter: Option<TraceFilter>,
}

/// Keeps only the spans one spanset filter matches, plus `match_depth` levels of their
/// descendants (-1: all) and, with `keep_hierarchy`, up to `ancestor_depth` levels of their
/// ancestors (-1: all).
#[derive(Debug, Clone)]
pub struct TraceFilter {
    query: Query,
    match_depth: i64,
    keep_hierarchy: bool,
    ancestor_depth: i64,
}

impl TraceFilter {
    /// A filter from TraceQL text, which must be a single spanset filter `{ … }`.
    pub fn new(
        text: &str,
        match_depth: i64,
        keep_hierarchy: bool,
        ancestor_depth: i64,
    ) -> Result<Self> {
        let query = traceql::check(text)?;
        let single_filter = matches!(
            &query.body,
            Body::Pipeline(p) if matches!(p.stages.as_slice(), [Stage::Spanset(SpansetExpr::Filter(_))])
        );
        if !single_filter {
            return Err(QueryError::invalid_traceql(format_args!(
                "{text}: only a single spanset filter {{ ... }} can filter a trace"
            )));
        }
        Ok(Self {
            query,
            match_depth,
            keep_hierarchy,
            ancestor_depth,
        })
    }

    /// The spans of `rows` to keep, given the ids the filter matched.
    fn keep(&self, rows: &[SpanRow], matched: &HashSet<SpanId>) -> Vec<SpanRow> {
        let mut keep: HashSet<SpanId> = matched.clone();
        let mut children: HashMap<SpanId, Vec<SpanId>> = HashMap::new();
        let parents: HashMap<SpanId, SpanId> = rows
            .iter()
            .filter_map(|r| r.parent_span_id.map(|p| (r.span_id, p)))
            .collect();
        for (child, parent) in &parents {
            children.entry(*parent).or_default().push(*child);
        }
        let within = |depth: i64, limit: i64| limit < 0 || depth <= limit;
        for id in matched {
            let mut frontier = vec![*id];
            let mut depth = 0;
            while !frontier.is_empty() && within(depth + 1, self.match_depth) {
                depth += 1;
                frontier = frontier
                    .iter()
                    .flat_map(|f| children.get(f).into_iter().flatten().copied())
                    .filter(|c| keep.insert(*c))
                    .collect();
            }
            if self.keep_hierarchy {
                let (mut at, mut depth) = (*id, 0);
                while let Some(parent) = parents.get(&at) {
                    depth += 1;
                    if !within(depth, self.ancestor_depth) || !keep.insert(*parent) && depth > 1 {
                        break;
                    }
                    at = *parent;
                }
            }
        }
        rows.iter()
            .filter(|r| keep.contains(&r.span_id))
            .cloned()
            .collect()
    }
}

/// The spans of a trace in `tenants`, deduplicated and in start order; `None` when there are
/// none, or none overlapping the request's window. With a filter, only the spans it keeps (an
/// empty list when it keeps none).
pub async fn find_trace(
    engine: &QueryEngine,
    tenants: &[String],
    request: &TraceRequest,
) -> Result<Option<Vec<SpanRow>>> {
    let mut rows = Vec::new();
    for tenant in tenants {
        let ctx = engine.session(tenant)?;
        for batch in &trace_spans(&ctx, request.id).await?.collect().await? {
            rows.extend(rows_from_batch(batch)?);
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    if let Some(range) = request.range
        && !rows
            .iter()
            .any(|r| range.overlaps(r.start_time_unix_nano, r.end_time_unix_nano))
    {
        return Ok(None);
    }
    let rows = dedupe(rows);
    let Some(filter) = &request.filter else {
        return Ok(Some(rows));
    };
    let mut matched = HashSet::new();
    for tenant in tenants {
        let ctx = engine.session(tenant)?;
        let Body::Pipeline(pipeline) = &filter.query.body else {
            continue;
        };
        let summary = lower::trace_summary(&ctx).await?;
        let frame = Lowerer::new(summary)
            .pipeline(pipeline, trace_spans(&ctx, request.id).await?)?
            .select(vec![col(spans::SPAN_ID)])?;
        for batch in frame.collect().await? {
            let ids = batch.column(0).as_fixed_size_binary();
            for i in 0..ids.len() {
                let mut id: SpanId = [0; 8];
                id.copy_from_slice(ids.value(i));
                matched.insert(id);
            }
        }
    }
    Ok(Some(filter.keep(&rows, &matched)))
}

/// The `spans` rows of trace `id`.
async fn trace_spans(
    ctx: &SessionContext,
    id: TraceId,
) -> Result<datafusion::dataframe::DataFrame> {
    Ok(ctx
        .table(TableKind::Spans.name())
        .await?
        .filter(trace_id_is(id))?)
}

fn trace_id_is(id: TraceId) -> Expr {
    col(spans::TRACE_ID).eq(lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec()))))
}

/// Spans of one trace in start-time order, with repeated deliveries of a span (same id and
/// kind) dropped.
fn dedupe(mut rows: Vec<SpanRow>) -> Vec<SpanRow> {
    rows.sort_by(|a, b| {
        (a.start_time_unix_nano, a.span_id, a.kind).cmp(&(
            b.start_time_unix_nano,
            b.span_id,
            b.kind,
        ))
    });
    let mut seen = std::collections::HashSet::new();
    rows.retain(|r| seen.insert((r.span_id, r.kind)));
    rows
}
