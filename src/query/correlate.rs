//! One trace with what the other signals say about it: its spans, the log records that carry
//! its trace id, and the metric exemplars that point at it.
//!
//! Each part is one query on the tenant's tables, pruned the way SQL users get it too: the
//! trace-id filter on `spans` and `logs` prunes blocks by id range and row groups by bloom
//! filter; exemplars are looked for in the points of the trace's time span (from its first
//! span's start until [`EXEMPLAR_HORIZON`] after its end: a point carrying an exemplar is
//! exported after the measurement).
//!
//! [`Correlation`] is what `GET /api/v1/traces/{id}/correlated` answers as JSON and what
//! `spanlake trace` prints, as a tree ([`Correlation::render`]) or as the same JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::encoding::expr_fn::encode;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{SessionContext, col, lit};
use serde::{Deserialize, Serialize};

use super::{ErrorKind, QueryEngine, QueryError, Result};
use crate::schema::{TableKind, TraceId, logs, metrics, spans};

/// How long after a trace ends its exemplars are looked for.
pub const EXEMPLAR_HORIZON_NS: i64 = 3_600_000_000_000;
/// [`EXEMPLAR_HORIZON_NS`] as text, for docs and messages.
pub const EXEMPLAR_HORIZON: &str = "1h";

/// The span attributes [`CorrelatedSpan::attributes`] shows: the dedicated columns that say
/// most about a span at a glance.
const KEY_ATTRIBUTES: &[(&str, &str)] = &[
    ("http_method", "http.request.method"),
    ("http_route", "http.route"),
    ("http_status_code", "http.response.status_code"),
    ("db_system", "db.system"),
    ("rpc_method", "rpc.method"),
];

/// A trace with its log records and exemplars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// Lowercase hex.
    pub trace_id: String,
    /// Start of the earliest span, Unix nanoseconds.
    pub start_ns: i64,
    /// From the earliest start to the latest end.
    pub duration_ns: i64,
    /// Spans by start time.
    pub spans: Vec<CorrelatedSpan>,
    /// Log records of the trace by time.
    pub logs: Vec<CorrelatedLog>,
    /// Exemplars pointing at the trace, by time.
    pub exemplars: Vec<CorrelatedExemplar>,
}

/// One span of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelatedSpan {
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    /// The key attributes the span has (see [`KEY_ATTRIBUTES`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// One log record of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelatedLog {
    pub time_ns: i64,
    pub severity_number: i32,
    pub severity_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    pub service: String,
}

/// One exemplar pointing at the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelatedExemplar {
    pub metric_name: String,
    pub service: String,
    pub time_ns: i64,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// A span row as its query returns it, before the key attributes are gathered.
#[derive(Debug, Deserialize)]
struct SpanRecord {
    span_id: String,
    parent_span_id: Option<String>,
    service: String,
    name: String,
    kind: String,
    status: String,
    status_message: String,
    start_ns: i64,
    duration_ns: i64,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

impl QueryEngine {
    /// The trace `id` of `tenant` with its log records and exemplars; `NotFound` when neither
    /// a span nor a log record of it exists.
    pub async fn correlate(&self, tenant: &str, id: TraceId) -> Result<Correlation> {
        let ctx = self.session(tenant)?;
        let spans: Vec<CorrelatedSpan> = rows(span_query(&ctx, id).await?)
            .await?
            .into_iter()
            .map(SpanRecord::into_span)
            .collect();
        let logs: Vec<CorrelatedLog> = rows(log_query(&ctx, id).await?).await?;
        if spans.is_empty() && logs.is_empty() {
            return Err(QueryError::new(
                ErrorKind::NotFound,
                format!("trace {} not found", crate::ids::hex(&id)),
            ));
        }
        let start_ns = spans
            .iter()
            .map(|s| s.start_ns)
            .chain(logs.iter().map(|l| l.time_ns))
            .min()
            .unwrap_or_default();
        let end_ns = spans
            .iter()
            .map(|s| s.start_ns.saturating_add(s.duration_ns))
            .chain(logs.iter().map(|l| l.time_ns))
            .max()
            .unwrap_or_default();
        let mut exemplars: Vec<CorrelatedExemplar> =
            rows(exemplar_query(&ctx, id, start_ns, end_ns).await?).await?;
        // A cumulative metric repeats its exemplars in every export until replaced.
        exemplars.sort_by(|a, b| {
            (a.time_ns, &a.metric_name, &a.span_id).cmp(&(b.time_ns, &b.metric_name, &b.span_id))
        });
        exemplars.dedup_by(|a, b| {
            (a.time_ns, &a.metric_name, &a.span_id, &a.service)
                == (b.time_ns, &b.metric_name, &b.span_id, &b.service)
        });
        Ok(Correlation {
            trace_id: crate::ids::hex(&id),
            start_ns,
            duration_ns: end_ns - start_ns,
            spans,
            logs,
            exemplars,
        })
    }
}

impl SpanRecord {
    fn into_span(self) -> CorrelatedSpan {
        let attributes = KEY_ATTRIBUTES
            .iter()
            .filter_map(|(column, key)| {
                let value = self.rest.get(*column)?;
                (!value.is_null()).then(|| (key.to_string(), value.clone()))
            })
            .collect();
        CorrelatedSpan {
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            service: self.service,
            name: self.name,
            kind: self.kind,
            status: self.status,
            status_message: self.status_message,
            start_ns: self.start_ns,
            duration_ns: self.duration_ns,
            attributes,
        }
    }
}

fn trace_id_literal(id: TraceId) -> Expr {
    lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec())))
}

fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

fn hex(expr: Expr) -> Expr {
    encode(expr, lit("hex"))
}

fn nanos(expr: Expr) -> Expr {
    cast(expr, DataType::Int64)
}

async fn span_query(ctx: &SessionContext, id: TraceId) -> Result<DataFrame> {
    let mut columns = vec![
        hex(col(spans::SPAN_ID)).alias("span_id"),
        hex(col(spans::PARENT_SPAN_ID)).alias("parent_span_id"),
        col(spans::SERVICE_NAME).alias("service"),
        col(spans::NAME).alias("name"),
        col(spans::KIND).alias("kind"),
        col(spans::STATUS_CODE).alias("status"),
        col(spans::STATUS_MESSAGE).alias("status_message"),
        nanos(col(spans::START_TIME)).alias("start_ns"),
        col(spans::DURATION_NS).alias("duration_ns"),
    ];
    columns.extend(KEY_ATTRIBUTES.iter().map(|(column, _)| col(*column)));
    Ok(ctx
        .table(TableKind::Spans.name())
        .await?
        .filter(col(spans::TRACE_ID).eq(trace_id_literal(id)))?
        .select(columns)?
        .sort_by(vec![col("start_ns"), col("span_id")])?)
}

async fn log_query(ctx: &SessionContext, id: TraceId) -> Result<DataFrame> {
    Ok(ctx
        .table(TableKind::Logs.name())
        .await?
        .filter(col(logs::TRACE_ID).eq(trace_id_literal(id)))?
        .select(vec![
            nanos(col(logs::TIME)).alias("time_ns"),
            col(logs::SEVERITY_NUMBER).alias("severity_number"),
            col(logs::SEVERITY_TEXT).alias("severity_text"),
            col(logs::BODY).alias("body"),
            hex(col(logs::SPAN_ID)).alias("span_id"),
            col(logs::SERVICE_NAME).alias("service"),
        ])?
        .sort_by(vec![col("time_ns")])?)
}

async fn exemplar_query(
    ctx: &SessionContext,
    id: TraceId,
    start_ns: i64,
    end_ns: i64,
) -> Result<DataFrame> {
    let exemplar = |field: &str| get_field(col(metrics::EXEMPLARS), field);
    Ok(ctx
        .table(TableKind::Metrics.name())
        .await?
        .filter(
            col(metrics::TIME)
                .gt_eq(timestamp(start_ns))
                .and(col(metrics::TIME).lt(timestamp(end_ns.saturating_add(EXEMPLAR_HORIZON_NS)))),
        )?
        .select(vec![
            col(metrics::METRIC_NAME),
            col(metrics::SERVICE_NAME),
            col(metrics::EXEMPLARS),
        ])?
        .unnest_columns(&[metrics::EXEMPLARS])?
        .filter(exemplar(metrics::exemplar::TRACE_ID).eq(trace_id_literal(id)))?
        .select(vec![
            col(metrics::METRIC_NAME).alias("metric_name"),
            col(metrics::SERVICE_NAME).alias("service"),
            nanos(exemplar(metrics::exemplar::TIME)).alias("time_ns"),
            exemplar(metrics::exemplar::VALUE).alias("value"),
            hex(exemplar(metrics::exemplar::SPAN_ID)).alias("span_id"),
        ])?)
}

/// Runs `frame` and reads its rows into `T` by column name.
async fn rows<T: serde::de::DeserializeOwned>(frame: DataFrame) -> Result<Vec<T>> {
    let batches: Vec<RecordBatch> = frame.collect().await?;
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| QueryError::internal(format!("reading correlated rows: {e}")))
}

impl Correlation {
    /// The trace as a tree of spans (service, name, start offset, duration bar, status, key
    /// attributes), then its log records and exemplars, for a terminal `width` columns wide.
    pub fn render(&self, width: usize) -> String {
        let mut out = String::new();
        let services: std::collections::BTreeSet<&str> =
            self.spans.iter().map(|s| s.service.as_str()).collect();
        let _ = writeln!(
            out,
            "trace {}  {} spans  {} services  {}",
            self.trace_id,
            self.spans.len(),
            services.len(),
            millis(self.duration_ns)
        );
        let bar_width = width.saturating_sub(90).clamp(10, 40);
        for (depth, span) in self.tree_order() {
            let label = format!("{}{} {}", "  ".repeat(depth), span.service, span.name);
            let offset = span.start_ns - self.start_ns;
            let status = if span.status_message.is_empty() {
                span.status.clone()
            } else {
                format!("{}: {}", span.status, span.status_message)
            };
            let attributes: Vec<String> = span
                .attributes
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            let _ = writeln!(
                out,
                "  {label:<48} {:>11} {:>10} |{}| {status} {}",
                offset_text(offset),
                millis(span.duration_ns),
                self.bar(offset, span.duration_ns, bar_width),
                attributes.join(" ")
            );
        }
        let _ = writeln!(out, "logs ({})", self.logs.len());
        for log in &self.logs {
            let _ = writeln!(
                out,
                "  {:>11} {:<5} {:<16} {} {}",
                offset_text(log.time_ns - self.start_ns),
                log.severity_text,
                log.service,
                log.span_id.as_deref().unwrap_or("-"),
                log.body.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "exemplars ({})", self.exemplars.len());
        for exemplar in &self.exemplars {
            let _ = writeln!(
                out,
                "  {:>11} {} {} value={} span {}",
                offset_text(exemplar.time_ns - self.start_ns),
                exemplar.service,
                exemplar.metric_name,
                exemplar.value,
                exemplar.span_id.as_deref().unwrap_or("-")
            );
        }
        out
    }

    /// Spans depth-first from the roots, children by start time; spans whose parent is not in
    /// the trace count as roots.
    fn tree_order(&self) -> Vec<(usize, &CorrelatedSpan)> {
        let ids: std::collections::HashSet<&str> =
            self.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut children: HashMap<Option<&str>, Vec<&CorrelatedSpan>> = HashMap::new();
        for span in &self.spans {
            let parent = span
                .parent_span_id
                .as_deref()
                .filter(|p| ids.contains(p) && *p != span.span_id);
            children.entry(parent).or_default().push(span);
        }
        let mut order = Vec::with_capacity(self.spans.len());
        let mut stack: Vec<(usize, &CorrelatedSpan)> = children
            .get(&None)
            .map(|roots| roots.iter().rev().map(|s| (0, *s)).collect())
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        while let Some((depth, span)) = stack.pop() {
            if !seen.insert(span.span_id.as_str()) {
                continue;
            }
            order.push((depth, span));
            if let Some(kids) = children.get(&Some(span.span_id.as_str())) {
                stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
            }
        }
        // Spans on a parent cycle are reached from no root: list them flat at the end.
        for span in &self.spans {
            if !seen.contains(span.span_id.as_str()) {
                order.push((0, span));
            }
        }
        order
    }

    fn bar(&self, offset: i64, duration: i64, width: usize) -> String {
        let total = self.duration_ns.max(1) as f64;
        let from = ((offset as f64 / total) * width as f64).floor() as usize;
        let len = (((duration as f64) / total) * width as f64).ceil().max(1.0) as usize;
        let from = from.min(width.saturating_sub(1));
        let to = (from + len).min(width);
        (0..width)
            .map(|i| if i >= from && i < to { '█' } else { ' ' })
            .collect()
    }
}

/// An offset from the trace's start, signed.
fn offset_text(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "+" };
    format!("{sign}{}", millis(ns.abs()))
}

fn millis(ns: i64) -> String {
    format!("{:.1}ms", ns as f64 / 1e6)
}
