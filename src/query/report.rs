//! The plans behind anomaly reports: per group of spans and per window (current, baseline),
//! the counts, errors and latency sketches the statistics compare; the same per time bucket for
//! charts; status messages and attribute values seen in one window only; and exemplar traces.
//!
//! Every number comes out of a DataFusion plan over the `spans` table (scoped by an optional
//! TraceQL query lowered as for search): no span is looked at in Rust. Latency distributions
//! are `sketch(duration_ns)` aggregates, which merge exactly across partitions and blocks.
//! What the numbers mean is the report layer's business ([`crate::report`]).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;
use spanlake_udfs::Sketch;

use super::search::window_input;
use super::traceql::Lowerer;
use super::{QueryEngine, QueryError, Result};
use crate::schema::TableKind;
use crate::time::TimeRange;
use crate::traceql;

/// The view the report's SQL reads: the scoped spans of both windows, with their group.
const VIEW: &str = "report_spans";

/// What to compare.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    /// `[start, end)` of the window under test, Unix nanoseconds.
    pub current: (i64, i64),
    /// `[start, end)` of the window it is compared with.
    pub baseline: (i64, i64),
    /// A TraceQL query whose matched spans are the ones compared; all spans when `None`.
    pub filter: Option<String>,
    /// Group keys in TraceQL's spelling: `service.name` (or `resource.service.name`), `name`,
    /// `kind`, `status`, `span.KEY`, `resource.KEY`.
    pub group_by: Vec<String>,
    /// Span kinds compared (`server`, `consumer`, …); every kind when empty.
    pub kinds: Vec<String>,
    /// Span attributes whose values are checked for values new in the current window.
    pub new_value_keys: Vec<String>,
}

/// Which window a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Current,
    Baseline,
}

impl Side {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "current" => Ok(Side::Current),
            "baseline" => Ok(Side::Baseline),
            other => Err(QueryError::internal(format!(
                "unknown report window {other}"
            ))),
        }
    }
}

/// A group's values, in the order of [`ReportQuery::group_by`].
pub type GroupKey = Vec<String>;

/// One group in one window.
#[derive(Debug, Clone)]
pub struct WindowStats {
    /// Spans.
    pub spans: u64,
    /// Of those, spans with status error.
    pub errors: u64,
    /// Their durations in nanoseconds.
    pub latency: Sketch,
}

/// One time bucket of one group.
#[derive(Debug, Clone)]
pub struct BucketStats {
    /// Bucket start, Unix nanoseconds.
    pub start_ns: i64,
    pub spans: u64,
    pub errors: u64,
    /// The bucket's p99 duration in nanoseconds.
    pub p99_ns: Option<f64>,
}

/// A trace showing a group's behaviour in the current window.
#[derive(Debug, Clone, PartialEq)]
pub struct ExemplarTrace {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The span's duration in nanoseconds.
    pub duration_ns: i64,
    /// Whether the span failed.
    pub error: bool,
}

/// A value seen in the current window and not in the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct NewValue {
    /// `status_message`, or the attribute's key.
    pub key: String,
    pub value: String,
    /// Spans with it in the current window.
    pub spans: u64,
}

/// Everything a report needs from the data.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    /// Per group, per window.
    pub stats: BTreeMap<GroupKey, BTreeMap<Side, WindowStats>>,
    /// Per group, per window, buckets in time order.
    pub series: BTreeMap<GroupKey, BTreeMap<Side, Vec<BucketStats>>>,
    /// Bucket width of [`Self::series`].
    pub bucket_ns: i64,
    /// Per group: error status messages and attribute values new in the current window.
    pub new_values: BTreeMap<GroupKey, Vec<NewValue>>,
    /// Per group: the slowest and the slowest failed spans' traces in the current window.
    pub exemplars: BTreeMap<GroupKey, Vec<ExemplarTrace>>,
}

/// Buckets per window in the series.
const BUCKETS: i64 = 60;
/// Exemplar traces per group and reason.
const EXEMPLARS: usize = 3;

/// Runs the report's plans for `tenant`.
pub async fn report_data(
    engine: &QueryEngine,
    tenant: &str,
    query: &ReportQuery,
) -> Result<ReportData> {
    let ctx = engine.session(tenant)?;
    register_view(&ctx, query).await?;
    let groups: Vec<String> = (0..query.group_by.len()).map(group_column).collect();
    let group_list = groups.join(", ");
    let mut data = ReportData::default();

    let sql = format!(
        "SELECT side, {group_list}, count(*) AS spans, \
         sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
         sketch(duration_ns) AS latency \
         FROM {VIEW} GROUP BY side, {group_list}"
    );
    for batch in collect(&ctx, &sql).await? {
        for row in 0..batch.num_rows() {
            let (side, key) = side_and_key(&batch, row, groups.len())?;
            let latency = sketch_at(&batch, row)?;
            data.stats.entry(key).or_default().insert(
                side,
                WindowStats {
                    spans: u64_at(&batch, "spans", row)?,
                    errors: u64_at(&batch, "errors", row)?,
                    latency,
                },
            );
        }
    }

    // One bucket width for both windows, so their charts read alike.
    let longest = (query.current.1 - query.current.0).max(query.baseline.1 - query.baseline.0);
    data.bucket_ns = (longest / BUCKETS).max(1_000_000_000);
    let sql = format!(
        "SELECT side, {group_list}, \
         (CAST(start_time AS BIGINT) / {bucket}) * {bucket} AS bucket, \
         count(*) AS spans, \
         sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS errors, \
         sketch_quantile(sketch(duration_ns), 0.99) AS p99 \
         FROM {VIEW} GROUP BY side, {group_list}, bucket ORDER BY bucket",
        bucket = data.bucket_ns
    );
    for batch in collect(&ctx, &sql).await? {
        let p99 = batch
            .column_by_name("p99")
            .ok_or_else(|| QueryError::internal("no p99 column"))?
            .as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let (side, key) = side_and_key(&batch, row, groups.len())?;
            data.series
                .entry(key)
                .or_default()
                .entry(side)
                .or_default()
                .push(BucketStats {
                    start_ns: i64_at(&batch, "bucket", row)?,
                    spans: u64_at(&batch, "spans", row)?,
                    errors: u64_at(&batch, "errors", row)?,
                    p99_ns: p99.is_valid(row).then(|| p99.value(row)),
                });
        }
    }

    // Values of the current window absent from the baseline, per group: error status messages,
    // then each attribute asked for.
    let mut value_sources = vec![(
        "status_message".to_string(),
        "CASE WHEN status_code = 'error' AND status_message <> '' THEN status_message END"
            .to_string(),
    )];
    for key in &query.new_value_keys {
        value_sources.push((key.clone(), attribute_text("span_attrs", key)));
    }
    for (key, value) in value_sources {
        let sql = format!(
            "WITH v AS (SELECT side, {group_list}, {value} AS value FROM {VIEW}) \
             SELECT {group_list}, value, count(*) AS spans FROM v \
             WHERE value IS NOT NULL GROUP BY {group_list}, value \
             HAVING sum(CASE WHEN side = 'baseline' THEN 1 ELSE 0 END) = 0 \
             ORDER BY spans DESC"
        );
        for batch in collect(&ctx, &sql).await? {
            let values = batch
                .column_by_name("value")
                .ok_or_else(|| QueryError::internal("no value column"))?;
            for row in 0..batch.num_rows() {
                let group = key_at(&batch, row, groups.len())?;
                data.new_values.entry(group).or_default().push(NewValue {
                    key: key.clone(),
                    value: super::search::opt_string(values.as_ref(), row).unwrap_or_default(),
                    spans: u64_at(&batch, "spans", row)?,
                });
            }
        }
    }

    // The slowest spans' traces, and the slowest failed spans' traces, per group.
    let sql = format!(
        "WITH ranked AS (SELECT {group_list}, id_hex(trace_id) AS trace, duration_ns, \
           status_code = 'error' AS error, \
           row_number() OVER (PARTITION BY {group_list} ORDER BY duration_ns DESC, trace_id) AS slow_rank, \
           row_number() OVER (PARTITION BY {group_list}, status_code = 'error' ORDER BY duration_ns DESC, trace_id) AS error_rank \
           FROM {VIEW} WHERE side = 'current') \
         SELECT {group_list}, trace, duration_ns, error FROM ranked \
         WHERE slow_rank <= {EXEMPLARS} OR (error AND error_rank <= {EXEMPLARS}) \
         ORDER BY error DESC, duration_ns DESC"
    );
    for batch in collect(&ctx, &sql).await? {
        let traces = batch
            .column_by_name("trace")
            .ok_or_else(|| QueryError::internal("no trace column"))?;
        let errors = batch
            .column_by_name("error")
            .ok_or_else(|| QueryError::internal("no error column"))?
            .as_boolean();
        for row in 0..batch.num_rows() {
            let group = key_at(&batch, row, groups.len())?;
            let exemplar = ExemplarTrace {
                trace_id: super::search::opt_string(traces.as_ref(), row).unwrap_or_default(),
                duration_ns: i64_at(&batch, "duration_ns", row)?,
                error: errors.is_valid(row) && errors.value(row),
            };
            let list = data.exemplars.entry(group).or_default();
            if !list.iter().any(|e| e.trace_id == exemplar.trace_id) {
                list.push(exemplar);
            }
        }
    }
    Ok(data)
}

/// Registers [`VIEW`]: the spans of both windows (by start time), scoped by the query's
/// TraceQL filter and span kinds, with `side` and one `g{i}` column per group key.
async fn register_view(ctx: &SessionContext, query: &ReportQuery) -> Result<()> {
    let (current, baseline) = (query.current, query.baseline);
    for (name, (start, end)) in [("current", current), ("baseline", baseline)] {
        if start >= end {
            return Err(QueryError::bad_request(format!(
                "the {name} window is empty: its start is not before its end"
            )));
        }
    }
    let whole = TimeRange {
        start_ns: current.0.min(baseline.0),
        end_ns: current.1.max(baseline.1) - 1,
    };
    let scoped = match &query.filter {
        Some(text) => {
            // TraceQL is evaluated per trace: the filter sees whole traces overlapping the
            // windows, with their summary.
            let (input, summary) = window_input(ctx, whole).await?;
            let checked = traceql::check(text)?;
            if matches!(checked.body, traceql::ast::Body::Metrics(_)) {
                return Err(QueryError::bad_request(format!(
                    "the report filter must be a spanset query such as {{ resource.service.name = \"api\" }}, got the metrics query {text}"
                )));
            }
            Lowerer::new(summary).search(&checked, input)?.spans
        }
        // Without a filter only spans are compared: no trace summary is needed.
        None => ctx.table(TableKind::Spans.name()).await?,
    };
    ctx.register_table("report_scoped", scoped.into_view())?;
    let mut columns = vec![format!(
        "CASE WHEN start_time >= {c0} AND start_time < {c1} THEN 'current' \
         WHEN start_time >= {b0} AND start_time < {b1} THEN 'baseline' END AS side",
        c0 = timestamp(current.0),
        c1 = timestamp(current.1),
        b0 = timestamp(baseline.0),
        b1 = timestamp(baseline.1),
    )];
    for (i, key) in query.group_by.iter().enumerate() {
        columns.push(format!("{} AS {}", group_expr(key)?, group_column(i)));
    }
    columns.extend(
        [
            "trace_id",
            "start_time",
            "duration_ns",
            "status_code",
            "status_message",
            "span_attrs_str",
            "span_attrs_int",
            "span_attrs_float",
            "span_attrs_bool",
        ]
        .map(str::to_string),
    );
    // The span time range first, on the plain column, so that it prunes blocks and row
    // groups; `side` then tells the windows apart.
    let mut conditions = vec![
        format!("start_time >= {}", timestamp(whole.start_ns)),
        format!("start_time <= {}", timestamp(whole.end_ns)),
        "side IS NOT NULL".to_string(),
    ];
    if !query.kinds.is_empty() {
        let kinds: Vec<String> = query.kinds.iter().map(|k| quote(k)).collect();
        conditions.push(format!("kind IN ({})", kinds.join(", ")));
    }
    let sql = format!(
        "SELECT * FROM (SELECT kind, {} FROM report_scoped) WHERE {}",
        columns.join(", "),
        conditions.join(" AND ")
    );
    let view = ctx.sql(&sql).await?;
    ctx.register_table(VIEW, view.into_view())?;
    Ok(())
}

fn timestamp(ns: i64) -> String {
    format!("to_timestamp_nanos({ns})")
}

fn group_column(i: usize) -> String {
    format!("g{i}")
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The SQL of a group key in TraceQL's spelling.
pub fn group_expr(key: &str) -> Result<String> {
    Ok(match key {
        "service.name" | "resource.service.name" => "service_name".into(),
        "name" => "name".into(),
        "kind" => "kind".into(),
        "status" => "status_code".into(),
        "statusMessage" => "status_message".into(),
        other => {
            if let Some(attr) = other.strip_prefix("span.") {
                attribute_text("span_attrs", attr)
            } else if let Some(attr) = other.strip_prefix("resource.") {
                attribute_text("resource_attrs", attr)
            } else {
                return Err(QueryError::bad_request(format!(
                    "cannot group a report by {other:?}: use service.name, name, kind, status, span.KEY or resource.KEY"
                )));
            }
        }
    })
}

/// An attribute of any scalar type as text: `coalesce` over the typed maps.
fn attribute_text(prefix: &str, key: &str) -> String {
    let key = quote(key);
    format!(
        "coalesce({prefix}_str[{key}], CAST({prefix}_int[{key}] AS VARCHAR), \
         CAST({prefix}_float[{key}] AS VARCHAR), CAST({prefix}_bool[{key}] AS VARCHAR))"
    )
}

/// Runs `sql`; text columns come back as plain `Utf8`, whatever encoding the plan chose.
async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    batches
        .into_iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .map(|column| match column.data_type() {
                    DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..) => {
                        arrow::compute::cast(column, &DataType::Utf8)
                    }
                    _ => Ok(column.clone()),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let fields: Vec<_> = batch
                .schema()
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
                .collect();
            Ok(RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                columns,
            )?)
        })
        .collect()
}

fn key_at(batch: &RecordBatch, row: usize, groups: usize) -> Result<GroupKey> {
    (0..groups)
        .map(|i| {
            let column = super::search::column(batch, &group_column(i))?;
            Ok(super::search::opt_string(column, row).unwrap_or_default())
        })
        .collect()
}

fn side_and_key(batch: &RecordBatch, row: usize, groups: usize) -> Result<(Side, GroupKey)> {
    let side = super::search::column(batch, "side")?;
    let side = Side::parse(&super::search::opt_string(side, row).unwrap_or_default())?;
    Ok((side, key_at(batch, row, groups)?))
}

fn i64_at(batch: &RecordBatch, name: &str, row: usize) -> Result<i64> {
    let column = super::search::column(batch, name)?;
    super::search::i64_at(column, row)
        .ok_or_else(|| QueryError::internal(format!("{name} is null")))
}

fn u64_at(batch: &RecordBatch, name: &str, row: usize) -> Result<u64> {
    let column = super::search::column(batch, name)?;
    let column = arrow::compute::cast(column, &DataType::Int64)?;
    let column = column.as_primitive::<Int64Type>();
    Ok(if column.is_valid(row) {
        column.value(row).max(0) as u64
    } else {
        0
    })
}

fn sketch_at(batch: &RecordBatch, row: usize) -> Result<Sketch> {
    let column = super::search::column(batch, "latency")?.as_binary::<i32>();
    if !column.is_valid(row) {
        return Sketch::new(spanlake_udfs::sketch::DEFAULT_ALPHA)
            .map_err(|e| QueryError::internal(format!("latency sketch: {e}")));
    }
    Sketch::decode(column.value(row))
        .map_err(|e| QueryError::internal(format!("latency sketch: {e}")))
}
