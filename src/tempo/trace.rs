//! Trace by id: every span of one trace, as OTLP resource spans.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use prost::Message;

use super::{TempoApi, TempoError, Window};
use crate::schema::to_otlp::{resource_spans, rows_from_batch};
use crate::schema::{SpanId, SpanRow, TraceId, spans};
use crate::tables::TableKind;
use crate::tempopb::{PartialStatus, Trace, TraceByIdMetrics, TraceByIdResponse};
use crate::traceql::ast::{Body, SpansetExpr, Stage};
use crate::traceql::lower::{self, Lowerer};
use crate::traceql::{self, Query};

/// Parses a trace id as Tempo does: 1 to 32 hex digits, either case; an odd count gets a
/// leading zero; shorter ids are left-padded with zero bytes.
pub fn parse_trace_id(text: &str) -> Result<TraceId, TempoError> {
    if let Some((position, c)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(TempoError::BadRequest(format!(
            "trace IDs can only contain hex characters: invalid character '{c}' at position {}",
            position + 1
        )));
    }
    if text.is_empty() {
        return Err(TempoError::BadRequest(
            "trace IDs can only contain hex characters: the id is empty".into(),
        ));
    }
    let padded = if text.len() % 2 == 1 {
        format!("0{text}")
    } else {
        text.to_string()
    };
    let bytes = hex::decode(&padded).map_err(|e| TempoError::BadRequest(e.to_string()))?;
    if bytes.len() > 16 {
        return Err(TempoError::BadRequest(
            "trace IDs can't be larger than 128 bits".into(),
        ));
    }
    let mut id = [0; 16];
    id[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(id)
}

/// A trace as found: complete, or cut down to the size limit.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundTrace {
    pub trace: Trace,
    /// Set when spans were left out to respect `max_bytes_per_trace`.
    pub truncated: bool,
}

impl FoundTrace {
    /// The v2 response: the trace, with PARTIAL status and Tempo's message when truncated.
    pub fn into_response(self, max_bytes: usize) -> TraceByIdResponse {
        let (status, message) = if self.truncated {
            (
                PartialStatus::Partial as i32,
                format!(
                    "Trace exceeds maximum size of {max_bytes} bytes, a partial trace is returned"
                ),
            )
        } else {
            (PartialStatus::Complete as i32, String::new())
        };
        TraceByIdResponse {
            trace: Some(self.trace),
            metrics: Some(TraceByIdMetrics::default()),
            status,
            message,
        }
    }
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

/// The `q` of `/api/v2/traces/{id}`: keep only the spans one spanset filter matches, plus
/// `match_depth` levels of their descendants (-1: all) and, with `keep_hierarchy`, up to
/// `ancestor_depth` levels of their ancestors (-1: all).
#[derive(Debug, Clone)]
pub struct TraceFilter {
    pub query: Query,
    pub match_depth: i64,
    pub keep_hierarchy: bool,
    pub ancestor_depth: i64,
}

fn depth_param(
    params: &HashMap<String, String>,
    name: &str,
    default: i64,
) -> Result<i64, TempoError> {
    match params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
    {
        None => Ok(default),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= -1 => Ok(n),
            _ => Err(TempoError::BadRequest(format!(
                "invalid {name}: must be an integer of at least -1, got {v:?}"
            ))),
        },
    }
}

impl TraceFilter {
    /// Reads `q`, `match_depth`, `keep_hierarchy` and `ancestor_depth`; `None` without `q`.
    pub fn from_params(params: &HashMap<String, String>) -> Result<Option<Self>, TempoError> {
        let Some(q) = params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty()) else {
            return Ok(None);
        };
        let query = traceql::check(q)
            .map_err(|e| TempoError::BadRequest(format!("invalid TraceQL query: {e}")))?;
        let single_filter = matches!(
            &query.body,
            Body::Pipeline(p) if matches!(p.stages.as_slice(), [Stage::Spanset(SpansetExpr::Filter(_))])
        );
        if !single_filter {
            return Err(TempoError::BadRequest(format!(
                "invalid TraceQL query: {q}: only a single spanset filter {{ ... }} can filter a trace"
            )));
        }
        let keep_hierarchy = match params.get("keep_hierarchy").map(String::as_str) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(TempoError::BadRequest(format!(
                    "invalid keep_hierarchy: must be true or false, got {other:?}"
                )));
            }
        };
        Ok(Some(Self {
            query,
            match_depth: depth_param(params, "match_depth", 0)?,
            keep_hierarchy,
            ancestor_depth: depth_param(params, "ancestor_depth", -1)?,
        }))
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

impl TempoApi {
    /// [`Self::find_trace`], then the spans `filter` keeps. A filter that keeps nothing
    /// gives an empty trace.
    pub async fn find_filtered_trace(
        &self,
        tenants: &[String],
        id: TraceId,
        window: Option<Window>,
        filter: Option<&TraceFilter>,
    ) -> Result<Option<FoundTrace>, TempoError> {
        let Some(filter) = filter else {
            return self.find_trace(tenants, id, window).await;
        };
        let Some(rows) = self.trace_rows(tenants, id, window).await? else {
            return Ok(None);
        };
        let mut matched = HashSet::new();
        for tenant in tenants {
            let ctx = self.engine.session(tenant)?;
            let Body::Pipeline(pipeline) = &filter.query.body else {
                continue;
            };
            let input = ctx
                .table(TableKind::Spans.name())
                .await?
                .filter(trace_id_is(id))?;
            let summary = lower::trace_summary(&ctx)
                .await
                .map_err(|e| TempoError::Internal(e.to_string()))?;
            let lowerer = Lowerer::new(summary);
            let frame = lowerer
                .pipeline(pipeline, input)
                .map_err(|e| TempoError::BadRequest(format!("invalid TraceQL query: {e}")))?
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
        Ok(Some(self.sized(filter.keep(&rows, &matched))))
    }

    /// Every span of trace `id` in `tenants`; `None` when no span exists, or when `window` is
    /// given and no span of the trace overlaps it. Larger traces than `max_bytes_per_trace`
    /// come back truncated to their earliest spans.
    pub async fn find_trace(
        &self,
        tenants: &[String],
        id: TraceId,
        window: Option<Window>,
    ) -> Result<Option<FoundTrace>, TempoError> {
        Ok(self
            .trace_rows(tenants, id, window)
            .await?
            .map(|rows| self.sized(rows)))
    }

    /// The spans of trace `id`, deduplicated and in start order; `None` when there are none,
    /// or none overlapping `window`.
    async fn trace_rows(
        &self,
        tenants: &[String],
        id: TraceId,
        window: Option<Window>,
    ) -> Result<Option<Vec<SpanRow>>, TempoError> {
        let mut rows = Vec::new();
        for tenant in tenants {
            let ctx = self.engine.session(tenant)?;
            let batches = ctx
                .table(TableKind::Spans.name())
                .await?
                .filter(trace_id_is(id))?
                .collect()
                .await?;
            for batch in &batches {
                rows.extend(rows_from_batch(batch)?);
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        if let Some(w) = window
            && !rows
                .iter()
                .any(|r| r.start_time_unix_nano <= w.end_ns && r.end_time_unix_nano >= w.start_ns)
        {
            return Ok(None);
        }
        Ok(Some(dedupe(rows)))
    }

    /// The trace of `rows`, cut to its earliest spans when larger than `max_bytes_per_trace`.
    fn sized(&self, rows: Vec<SpanRow>) -> FoundTrace {
        let max = self.settings.max_bytes_per_trace;
        let trace = Trace {
            resource_spans: resource_spans(&rows),
        };
        if trace.encoded_len() <= max {
            return FoundTrace {
                trace,
                truncated: false,
            };
        }
        // Keep the longest prefix of spans that fits.
        let mut budget = max;
        let mut kept = 0;
        for row in &rows {
            let cost = Trace {
                resource_spans: resource_spans(std::slice::from_ref(row)),
            }
            .encoded_len();
            if cost > budget {
                break;
            }
            budget -= cost;
            kept += 1;
        }
        FoundTrace {
            trace: Trace {
                resource_spans: resource_spans(&rows[..kept]),
            },
            truncated: true,
        }
    }
}

fn trace_id_is(id: TraceId) -> datafusion::prelude::Expr {
    col(spans::TRACE_ID).eq(lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_parse_like_tempo() {
        let mut one = [0; 16];
        one[15] = 1;
        assert_eq!(parse_trace_id("1").unwrap(), one);
        assert_eq!(parse_trace_id("01").unwrap(), one);
        assert_eq!(
            parse_trace_id("000000000000000000000000000000001").ok(),
            None
        );
        let mut mixed = [0; 16];
        mixed[14] = 0xab;
        mixed[15] = 0xcd;
        assert_eq!(parse_trace_id("AbCd").unwrap(), mixed);
        let e = parse_trace_id("12x4").unwrap_err().to_string();
        assert_eq!(
            e,
            "trace IDs can only contain hex characters: invalid character 'x' at position 3"
        );
        assert_eq!(
            parse_trace_id(&"f".repeat(34)).unwrap_err().to_string(),
            "trace IDs can't be larger than 128 bits"
        );
    }
}
