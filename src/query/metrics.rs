//! TraceQL metrics: range and instant queries over every tenant a request reads.
//!
//! Each leaf `pipeline | function` is lowered ([`Lowerer::metrics_aggregate`]) to one plan
//! per tenant that aggregates the matched spans per interval and label values; the partial
//! aggregates of all tenants are merged here (counts and sums added, sketches merged), turned
//! into series, and then the second stages (`topk`, `bottomk`, filters) and the arithmetic
//! between leaves run on the series, as Tempo's frontend does.
//!
//! Series follow Tempo: ungrouped leaves are labelled `__name__` = the function (quantiles:
//! only `p`; histograms: only `__bucket`); grouped ones carry one label per `by()` value
//! present, or the first label as `nil` when none is. Empty intervals are 0 in counts, rates,
//! histograms and quantiles, and missing (NaN) in sums, minimums, maximums and averages.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};

use super::search::{bytes_at, column, i64_at, opt_string, typed_value, window_input};
use super::traceql::metrics::{
    ATTRIBUTE, BUCKET, COUNT, EXEMPLAR_START, EXEMPLAR_TRACE, EXEMPLAR_VALUE, Grid, INTERVAL,
    Measure, SELECTED, SKETCH, VALUE, VALUE_TEXT, VALUE_TYPE, function_attrs, is_span_local,
    label_columns, label_name,
};
use super::traceql::{self as lower, Lowerer};
use super::{QueryEngine, QueryError, Result};
use crate::ids;
use crate::schema::{AttrValue, TableKind, spans};
use crate::time::{NANOS_PER_SECOND, go_duration};
use crate::traceql::ast::{
    ArithOp, Body, CmpOp, FieldExpr, Hint, MetricsExpr, MetricsFunction, Pipeline, SecondStage,
    Static,
};
use crate::traceql::{self};

/// Most intervals a range query may have.
pub const MAX_INTERVALS: i64 = 10_000;
/// Exemplars per series when a request asks for none in particular, and the most it may ask.
pub const MAX_EXEMPLARS: usize = 100;
/// The window of a metrics request that gives no start: this long before its end.
pub const DEFAULT_WINDOW_NS: i64 = 3_600 * NANOS_PER_SECOND;

/// Limits a metrics request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsLimits {
    /// Longest `end - start`.
    pub max_duration_ns: i64,
    /// `end` is clamped to this long before now, as data that recent may still be arriving.
    pub end_cutoff_ns: i64,
    /// Most series in a response; 0 for no limit.
    pub max_series: usize,
}

/// A checked metrics request: the query and its time grid.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRequest {
    /// TraceQL metrics query text.
    pub query: String,
    /// The aligned grid.
    pub grid: Grid,
    /// Exemplars per series at most (0: none).
    pub exemplars: usize,
    /// Most series returned; 0 for no limit.
    pub max_series: usize,
    /// An instant query: one interval, no alignment, no exemplars.
    pub instant: bool,
}

impl MetricsRequest {
    /// A range query over `(start_ns, end_ns]` with `step_ns` (the default step when `None`),
    /// checked and aligned as Tempo does: `end` clamped to the cutoff, the range bounded, at
    /// most [`MAX_INTERVALS`] intervals, `start` rounded down to a step less one step, `end`
    /// rounded up.
    pub fn range(
        query: String,
        (start_ns, end_ns): (i64, i64),
        step_ns: Option<i64>,
        exemplars: Option<usize>,
        max_series: usize,
        limits: &MetricsLimits,
        now_ns: i64,
    ) -> Result<Self> {
        let (start_ns, end_ns) = checked_window(start_ns, end_ns, limits, now_ns)?;
        let range = end_ns - start_ns;
        let step_ns = match step_ns {
            Some(step) if step <= 0 => {
                return Err(QueryError::bad_request("step must be greater than 0"));
            }
            Some(step) => step,
            None => default_step(range),
        };
        if range / step_ns > MAX_INTERVALS {
            let minimum = (range / MAX_INTERVALS).max(1);
            return Err(QueryError::bad_request(format!(
                "step of {} is too small, minimum step for given range is {}",
                go_duration(std::time::Duration::from_nanos(step_ns as u64)),
                go_duration(std::time::Duration::from_nanos(minimum as u64)),
            )));
        }
        let cutoff = now_ns - limits.end_cutoff_ns;
        let aligned_start = start_ns.div_euclid(step_ns) * step_ns - step_ns;
        let mut aligned_end = end_ns.div_euclid(step_ns) * step_ns;
        if aligned_end < end_ns {
            aligned_end += step_ns;
        }
        if aligned_end > cutoff {
            aligned_end = cutoff.div_euclid(step_ns) * step_ns;
        }
        if aligned_end <= aligned_start {
            aligned_end = aligned_start + step_ns;
        }
        Ok(Self {
            query,
            grid: Grid {
                start_ns: aligned_start,
                end_ns: aligned_end,
                step_ns,
            },
            exemplars: exemplars
                .filter(|n| *n > 0)
                .unwrap_or(MAX_EXEMPLARS)
                .min(MAX_EXEMPLARS),
            max_series: nonzero_min(max_series, limits.max_series),
            instant: false,
        })
    }

    /// An instant query: one interval `(start_ns, end_ns]`, `end` clamped to the cutoff.
    pub fn instant(
        query: String,
        (start_ns, end_ns): (i64, i64),
        limits: &MetricsLimits,
        now_ns: i64,
    ) -> Result<Self> {
        let (start_ns, end_ns) = checked_window(start_ns, end_ns, limits, now_ns)?;
        Ok(Self {
            query,
            grid: Grid {
                start_ns,
                end_ns,
                step_ns: end_ns - start_ns,
            },
            exemplars: 0,
            max_series: limits.max_series,
            instant: true,
        })
    }
}

fn nonzero_min(a: usize, b: usize) -> usize {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

fn checked_window(
    start_ns: i64,
    end_ns: i64,
    limits: &MetricsLimits,
    now_ns: i64,
) -> Result<(i64, i64)> {
    let cutoff = now_ns - limits.end_cutoff_ns;
    let end_ns = if end_ns > cutoff {
        if start_ns >= cutoff {
            return Err(QueryError::bad_request(
                "query window falls entirely within query_end_cutoff",
            ));
        }
        cutoff
    } else {
        end_ns
    };
    if start_ns >= end_ns {
        return Err(QueryError::bad_request("end must be greater than start"));
    }
    if end_ns - start_ns > limits.max_duration_ns {
        return Err(QueryError::bad_request(format!(
            "metrics query time range exceeds the maximum allowed duration of {}",
            go_duration(std::time::Duration::from_nanos(
                limits.max_duration_ns as u64
            ))
        )));
    }
    Ok((start_ns, end_ns))
}

/// Tempo's default step: about 240 intervals, rounded down to a multiple of the largest of
/// 1h, 5m, 1m, 15s, 5s and 1s that fits (at least 1s); windows under a minute use multiples
/// of 50ms.
pub fn default_step(range_ns: i64) -> i64 {
    const MS: i64 = 1_000_000;
    let raw = range_ns / 240;
    if range_ns < 60 * NANOS_PER_SECOND {
        return (raw / (50 * MS) * (50 * MS)).max(50 * MS);
    }
    for unit in [3600, 300, 60, 15, 5, 1].map(|s| s * NANOS_PER_SECOND) {
        if raw >= unit {
            return raw / unit * unit;
        }
    }
    NANOS_PER_SECOND
}

/// One output series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels in order.
    pub labels: Vec<(String, AttrValue)>,
    /// `(timestamp in ms, value)`, by time; NaN values left out.
    pub samples: Vec<(i64, f64)>,
    /// Exemplars, by time.
    pub exemplars: Vec<Exemplar>,
}

/// A span standing for a series at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// `trace:id` (short hex), then the series' `by()` labels.
    pub labels: Vec<(String, AttrValue)>,
    /// The measured value, NaN for counts, rates and histograms.
    pub value: f64,
    /// Span start in ms.
    pub timestamp_ms: i64,
}

/// What a metrics query found.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsResponse {
    /// The series, ordered by label count, then label keys, then values.
    pub series: Vec<Series>,
    /// Spans observed by the first-stage functions.
    pub inspected_spans: u64,
    /// Blocks overlapping the window.
    pub total_blocks: u32,
    /// Their bytes.
    pub total_block_bytes: u64,
    /// Jobs run (one per tenant and leaf).
    pub jobs: u32,
    /// Set when the answer is partial, saying why.
    pub partial: Option<String>,
}

/// Runs a metrics query over `tenants`.
pub async fn query(
    engine: &QueryEngine,
    tenants: &[String],
    request: &MetricsRequest,
) -> Result<MetricsResponse> {
    let query = traceql::check(&request.query)?;
    let Body::Metrics(expr) = &query.body else {
        return Err(QueryError::invalid_traceql(
            "a metrics query is expected here, e.g. `{ } | rate()`",
        ));
    };
    let exemplars = if request.instant {
        0
    } else {
        exemplar_hint(&query.hints).unwrap_or(request.exemplars)
    };
    let blocks = super::search::block_metrics(engine, tenants, request.grid.window());
    let mut run = Run {
        engine,
        tenants,
        grid: request.grid,
        exemplars,
        inspected_spans: 0,
        jobs: 0,
    };
    let set = run.evaluate(expr).await?;
    let mut series = set.into_output(&request.grid, request.instant);
    let mut partial = None;
    if request.max_series > 0 && series.len() > request.max_series {
        series.truncate(request.max_series);
        partial = Some(format!(
            "Response exceeds maximum series limit of {}, a partial response is returned. \
             Warning: the accuracy of each individual value is not guaranteed.",
            request.max_series
        ));
    }
    Ok(MetricsResponse {
        series,
        inspected_spans: run.inspected_spans,
        total_blocks: blocks.total_blocks,
        total_block_bytes: blocks.total_block_bytes,
        jobs: run.jobs,
        partial,
    })
}

/// `with(exemplars = N | false)`.
fn exemplar_hint(hints: &[Hint]) -> Option<usize> {
    hints
        .iter()
        .rev()
        .find(|h| h.name == "exemplars")
        .and_then(|h| match h.value {
            Static::Bool(false) => Some(0),
            Static::Int(n) if n >= 0 => Some((n as usize).min(MAX_EXEMPLARS)),
            _ => None,
        })
}

/// Series keyed by their labels, values per interval (NaN where missing).
#[derive(Debug, Clone, Default)]
struct SeriesSet {
    series: Vec<Working>,
}

#[derive(Debug, Clone)]
struct Working {
    labels: Vec<(String, AttrValue)>,
    values: Vec<f64>,
    exemplars: Vec<Exemplar>,
}

/// A label set as a comparable key (label values are typed; floats by their bits).
fn label_key(labels: &[(String, AttrValue)], skip_name: bool) -> Vec<(String, String)> {
    labels
        .iter()
        .filter(|(k, _)| !(skip_name && k == NAME_LABEL))
        .map(|(k, v)| (k.clone(), value_key(v)))
        .collect()
}

/// The key of a row's label values, missing ones included.
fn row_key(labels: &Labels) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|v| (String::new(), v.as_ref().map(value_key).unwrap_or_default()))
        .collect()
}

fn value_key(value: &AttrValue) -> String {
    match value {
        AttrValue::Str(s) => format!("s{s}"),
        AttrValue::Int(i) => format!("i{i:020}"),
        AttrValue::Float(f) => format!("f{f:e}"),
        AttrValue::Bool(b) => format!("b{b}"),
        AttrValue::Json(j) => format!("j{j}"),
        AttrValue::Bytes(b) => format!("x{}", ids::hex(b)),
    }
}

const NAME_LABEL: &str = "__name__";
/// The label telling `compare()` series apart.
const META_TYPE: &str = "__meta_type";
/// Values per attribute and side `compare()` keeps when the query does not say.
const DEFAULT_COMPARE_TOP_N: usize = 10;

/// A `compare()` value: its type (`str`, `int`, `float`, `bool`) and its text.
type TypedText = (String, String);
/// Values with their counts per interval.
type ValueCounts = Vec<(TypedText, Vec<f64>)>;

/// A `compare()` value back in its type.
fn typed_label(ty: &str, text: String) -> AttrValue {
    match ty {
        "int" => text
            .parse()
            .map_or(AttrValue::Str(text.clone()), AttrValue::Int),
        "float" => text
            .parse()
            .map_or(AttrValue::Str(text.clone()), AttrValue::Float),
        "bool" => text
            .parse()
            .map_or(AttrValue::Str(text.clone()), AttrValue::Bool),
        _ => AttrValue::Str(text),
    }
}

impl SeriesSet {
    fn into_output(self, grid: &Grid, instant: bool) -> Vec<Series> {
        let mut out: Vec<Series> = self
            .series
            .into_iter()
            .filter_map(|w| {
                let samples: Vec<(i64, f64)> = w
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_nan())
                    .map(|(k, v)| {
                        let end = if instant {
                            grid.end_ns
                        } else {
                            grid.start_ns + (k as i64 + 1) * grid.step_ns
                        };
                        (end / 1_000_000, *v)
                    })
                    .collect();
                if samples.is_empty() {
                    return None;
                }
                let mut exemplars = w.exemplars;
                exemplars.sort_by_key(|e| e.timestamp_ms);
                Some(Series {
                    labels: w.labels,
                    samples,
                    exemplars,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.labels
                .len()
                .cmp(&b.labels.len())
                .then_with(|| label_key(&a.labels, false).cmp(&label_key(&b.labels, false)))
        });
        out
    }
}

/// Partial aggregates of one leaf, merged over tenants.
#[derive(Debug, Default)]
struct Cell {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    sketch: Option<spanlake_udfs::Sketch>,
}

/// One evaluation: the request's grid and what it has counted so far.
struct Run<'a> {
    engine: &'a QueryEngine,
    tenants: &'a [String],
    grid: Grid,
    exemplars: usize,
    inspected_spans: u64,
    jobs: u32,
}

impl Run<'_> {
    async fn evaluate(&mut self, expr: &MetricsExpr) -> Result<SeriesSet> {
        match expr {
            MetricsExpr::Leaf { pipeline, function } => self.leaf(pipeline, function).await,
            MetricsExpr::Scalar(_) => Err(QueryError::invalid_traceql(
                "a metrics query needs at least one metrics function",
            )),
            MetricsExpr::Binary { op, lhs, rhs } => {
                let op = *op;
                match (lhs.as_ref(), rhs.as_ref()) {
                    (MetricsExpr::Scalar(s), other) => {
                        let value = scalar(s)?;
                        let set = Box::pin(self.evaluate(other)).await?;
                        Ok(with_scalar(set, |v| apply(op, value, v)))
                    }
                    (other, MetricsExpr::Scalar(s)) => {
                        let value = scalar(s)?;
                        let set = Box::pin(self.evaluate(other)).await?;
                        Ok(with_scalar(set, |v| apply(op, v, value)))
                    }
                    (l, r) => {
                        let l = Box::pin(self.evaluate(l)).await?;
                        let r = Box::pin(self.evaluate(r)).await?;
                        Ok(binary(op, l, r))
                    }
                }
            }
            MetricsExpr::Staged { expr, stages } => {
                let mut set = Box::pin(self.evaluate(expr)).await?;
                for stage in stages {
                    set = second_stage(stage, set)?;
                }
                Ok(set)
            }
        }
    }

    async fn leaf(&mut self, pipeline: &Pipeline, function: &MetricsFunction) -> Result<SeriesSet> {
        if let MetricsFunction::Compare {
            filter,
            top_n,
            bounds,
        } = function
        {
            let top_n = top_n.map_or(DEFAULT_COMPARE_TOP_N, |n| n.max(1) as usize);
            return self.compare(pipeline, filter, top_n, *bounds).await;
        }
        let measure = Measure::of(function)?;
        let (by, _) = function_attrs(function);
        let intervals = self.grid.intervals();
        let mut cells: Cells = BTreeMap::new();
        let mut exemplars: Vec<(Labels, Exemplar)> = Vec::new();
        for tenant in self.tenants {
            let ctx = self.engine.session(tenant)?;
            let (input, summary) = self.input(&ctx, pipeline).await?;
            let plan = Lowerer::new(summary).metrics_aggregate(
                pipeline,
                function,
                input,
                self.grid,
                self.exemplars > 0,
            )?;
            for batch in plan.collect().await? {
                self.read_cells(&batch, measure, by.len(), intervals, &mut cells)?;
                if self.exemplars > 0 {
                    read_exemplars(&batch, measure, by.len(), &mut exemplars)?;
                }
            }
            self.jobs += 1;
        }
        let names: Vec<String> = by.iter().map(label_name).collect();
        let mut set = self.series(function, measure, &names, cells)?;
        self.attach_exemplars(&mut set, measure, &names, exemplars);
        Ok(set)
    }

    /// `compare()`: for each side (baseline, selection) and attribute, the `top_n` values by
    /// span count as series `{__meta_type, <attr>=<value>}`, and the attribute's total over all
    /// its values as `{__meta_type=<side>_total, <attr>="nil"}`.
    async fn compare(
        &mut self,
        pipeline: &Pipeline,
        filter: &FieldExpr,
        top_n: usize,
        bounds: Option<(i64, i64)>,
    ) -> Result<SeriesSet> {
        let intervals = self.grid.intervals();
        // (selected, attribute, value) → counts per interval.
        let mut counts: BTreeMap<(bool, String, TypedText), Vec<f64>> = BTreeMap::new();
        for tenant in self.tenants {
            let ctx = self.engine.session(tenant)?;
            let (input, summary) = self.input(&ctx, pipeline).await?;
            let plan = Lowerer::new(summary)
                .metrics_compare(pipeline, filter, bounds, input, self.grid)?;
            for batch in plan.collect().await? {
                let selected = column(&batch, SELECTED)?.as_boolean_opt().ok_or_else(|| {
                    QueryError::internal("compare plan: selection is not boolean")
                })?;
                let interval = column(&batch, INTERVAL)?;
                let attribute = column(&batch, ATTRIBUTE)?;
                let value_type = column(&batch, VALUE_TYPE)?;
                let text = column(&batch, VALUE_TEXT)?;
                let n = column(&batch, COUNT)?;
                for row in 0..batch.num_rows() {
                    let Some(k) =
                        i64_at(interval, row).filter(|k| (0..intervals as i64).contains(k))
                    else {
                        continue;
                    };
                    let key = (
                        selected.is_valid(row) && selected.value(row),
                        opt_string(attribute, row).unwrap_or_default(),
                        (
                            opt_string(value_type, row).unwrap_or_default(),
                            opt_string(text, row).unwrap_or_default(),
                        ),
                    );
                    let count = i64_at(n, row).unwrap_or_default() as f64;
                    counts.entry(key).or_insert_with(|| vec![0.0; intervals])[k as usize] += count;
                    self.inspected_spans += count as u64;
                }
            }
            self.jobs += 1;
        }
        // Per (side, attribute): values ranked by their total count, and the totals.
        let mut by_attribute: BTreeMap<(bool, String), ValueCounts> = BTreeMap::new();
        for ((selected, attribute, value), values) in counts {
            by_attribute
                .entry((selected, attribute))
                .or_default()
                .push((value, values));
        }
        let mut set = SeriesSet::default();
        for ((selected, attribute), mut values) in by_attribute {
            let side = if selected { "selection" } else { "baseline" };
            let mut total = vec![0.0; intervals];
            for (_, counts) in &values {
                for (t, c) in total.iter_mut().zip(counts) {
                    *t += c;
                }
            }
            values.sort_by(|(a, ca), (b, cb)| {
                let sum = |c: &Vec<f64>| c.iter().sum::<f64>();
                sum(cb).total_cmp(&sum(ca)).then_with(|| a.cmp(b))
            });
            for ((ty, text), counts) in values.into_iter().take(top_n) {
                set.series.push(Working {
                    labels: vec![
                        (META_TYPE.into(), AttrValue::Str(side.into())),
                        (attribute.clone(), typed_label(&ty, text)),
                    ],
                    values: counts,
                    exemplars: Vec::new(),
                });
            }
            set.series.push(Working {
                labels: vec![
                    (META_TYPE.into(), AttrValue::Str(format!("{side}_total"))),
                    (attribute, AttrValue::Str("nil".into())),
                ],
                values: total,
                exemplars: Vec::new(),
            });
        }
        Ok(set)
    }

    /// The spans a leaf's pipeline runs over, and the trace summary: for a pipeline that
    /// judges each span alone, only the spans starting in the grid (pruned by the blocks'
    /// time statistics); otherwise the whole traces overlapping it.
    async fn input(
        &self,
        ctx: &SessionContext,
        pipeline: &Pipeline,
    ) -> Result<(DataFrame, DataFrame)> {
        if !is_span_local(pipeline) {
            return window_input(ctx, self.grid.window()).await;
        }
        let at = |ns: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(ns),
                Some("UTC".into()),
            ))
        };
        let spans = ctx.table(TableKind::Spans.name()).await?.filter(
            col(spans::START_TIME)
                .gt(at(self.grid.start_ns))
                .and(col(spans::START_TIME).lt_eq(at(self.grid.end_ns))),
        )?;
        Ok((spans, lower::trace_summary(ctx).await?))
    }

    fn read_cells(
        &mut self,
        batch: &RecordBatch,
        measure: Measure,
        labels: usize,
        intervals: usize,
        cells: &mut Cells,
    ) -> Result<()> {
        let interval = column(batch, INTERVAL)?;
        let counts = batch.column_by_name(COUNT);
        let values = batch.column_by_name(VALUE);
        let sketches = batch.column_by_name(SKETCH);
        let buckets = batch.column_by_name(BUCKET);
        for row in 0..batch.num_rows() {
            let Some(k) = i64_at(interval, row).filter(|k| (0..intervals as i64).contains(k))
            else {
                continue;
            };
            let labels = row_labels(batch, labels, row)?;
            let bucket = buckets
                .and_then(|b| f64_at(b.as_ref(), row))
                .map(f64::to_bits);
            let key = (row_key(&labels), bucket);
            let entry = cells.entry(key).or_insert_with(|| {
                let mut empty = Vec::with_capacity(intervals);
                empty.resize_with(intervals, Cell::default);
                (labels, empty)
            });
            let cell = &mut entry.1[k as usize];
            let n = counts
                .and_then(|c| i64_at(c.as_ref(), row))
                .unwrap_or_default()
                .max(0) as u64;
            let value = values.and_then(|v| f64_at(v.as_ref(), row));
            let first = cell.count == 0;
            cell.count += n;
            self.inspected_spans += n;
            if let Some(v) = value {
                match measure {
                    Measure::Sum | Measure::Avg => cell.sum += v,
                    Measure::Min if first || v < cell.min => cell.min = v,
                    Measure::Max if first || v > cell.max => cell.max = v,
                    _ => {}
                }
            }
            if let Some(bytes) = sketches.and_then(|s| {
                let s = s.as_binary_opt::<i32>()?;
                s.is_valid(row).then(|| s.value(row))
            }) {
                let sketch = spanlake_udfs::Sketch::decode(bytes)
                    .map_err(|e| QueryError::internal(format!("quantile sketch: {e}")))?;
                self.inspected_spans += sketch.count();
                match &mut cell.sketch {
                    Some(held) => held
                        .merge(&sketch)
                        .map_err(|e| QueryError::internal(format!("quantile sketch: {e}")))?,
                    slot @ None => *slot = Some(sketch),
                }
            }
        }
        Ok(())
    }

    /// Turns merged cells into series.
    fn series(
        &self,
        function: &MetricsFunction,
        measure: Measure,
        names: &[String],
        cells: Cells,
    ) -> Result<SeriesSet> {
        let step_seconds = self.grid.step_ns as f64 / NANOS_PER_SECOND as f64;
        let function_name = function_name(function);
        let mut set = SeriesSet::default();
        for ((_, bucket), (values, cells)) in cells {
            let mut labels = series_labels(names, values);
            if labels.is_empty() && !matches!(measure, Measure::Quantile | Measure::Histogram) {
                labels.push((NAME_LABEL.into(), AttrValue::Str(function_name.into())));
            }
            match measure {
                Measure::Quantile => {
                    let MetricsFunction::QuantileOverTime { quantiles, .. } = function else {
                        return Err(QueryError::internal("quantile measure without quantiles"));
                    };
                    for &q in quantiles {
                        let mut labels = labels.clone();
                        labels.push(("p".into(), AttrValue::Float(q)));
                        let values = cells
                            .iter()
                            .map(|c| match &c.sketch {
                                Some(s) => s.quantile(q).ok().flatten().unwrap_or(0.0),
                                None => 0.0,
                            })
                            .collect();
                        set.series.push(Working {
                            labels,
                            values,
                            exemplars: Vec::new(),
                        });
                    }
                    continue;
                }
                Measure::Histogram => {
                    let bound = f64::from_bits(bucket.unwrap_or_default());
                    labels.push((BUCKET.into(), AttrValue::Float(bound)));
                }
                _ => {}
            }
            let values = cells
                .iter()
                .map(|c| match measure {
                    Measure::Count if matches!(function, MetricsFunction::Rate { .. }) => {
                        c.count as f64 / step_seconds
                    }
                    Measure::Count | Measure::Histogram => c.count as f64,
                    _ if c.count == 0 => f64::NAN,
                    Measure::Sum => c.sum,
                    Measure::Min => c.min,
                    Measure::Max => c.max,
                    Measure::Avg => c.sum / c.count as f64,
                    Measure::Quantile => f64::NAN,
                })
                .collect();
            set.series.push(Working {
                labels,
                values,
                exemplars: Vec::new(),
            });
        }
        Ok(set)
    }

    /// Gives each series its exemplars: those with its `by()` values, at most the limit, spread
    /// over time; a quantile exemplar goes to the quantile whose overall value is nearest its
    /// own.
    fn attach_exemplars(
        &self,
        set: &mut SeriesSet,
        measure: Measure,
        names: &[String],
        exemplars: Vec<(Labels, Exemplar)>,
    ) {
        for (values, mut exemplar) in exemplars {
            let by_labels = series_labels(names, values);
            exemplar.labels.extend(by_labels.iter().cloned());
            let want = label_key(&by_labels, false);
            let matches = |w: &Working| {
                let key = label_key(&w.labels, true);
                let own: Vec<_> = key
                    .into_iter()
                    .filter(|(k, _)| k != "p" && k != BUCKET)
                    .collect();
                own == want
            };
            let target = match measure {
                Measure::Quantile => set
                    .series
                    .iter_mut()
                    .filter(|w| matches(w))
                    .min_by(|a, b| {
                        let distance = |w: &Working| (overall(&w.values) - exemplar.value).abs();
                        distance(a).total_cmp(&distance(b))
                    }),
                Measure::Histogram => set.series.iter_mut().find(|w| {
                    matches(w)
                        && w.labels.iter().any(|(k, v)| {
                            k == BUCKET
                                && matches!(v, AttrValue::Float(b) if exemplar.value.is_nan() || *b >= exemplar.value)
                        })
                }),
                _ => set.series.iter_mut().find(|w| matches(w)),
            };
            if let Some(series) = target {
                if measure == Measure::Histogram {
                    exemplar.value = f64::NAN;
                }
                series.exemplars.push(exemplar);
            }
        }
        // At most the limit per series, spread evenly over time.
        for series in &mut set.series {
            let n = series.exemplars.len();
            if n > self.exemplars {
                series.exemplars.sort_by_key(|e| e.timestamp_ms);
                let keep: Vec<usize> = (0..self.exemplars)
                    .map(|i| i * n / self.exemplars)
                    .collect();
                let mut index = 0;
                series.exemplars.retain(|_| {
                    index += 1;
                    keep.binary_search(&(index - 1)).is_ok()
                });
            }
        }
    }
}

/// The mean of the non-NaN values, to place quantile exemplars.
fn overall(values: &[f64]) -> f64 {
    let present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

/// Merged cells of a leaf: per label values (and histogram bucket), the labels and one cell
/// per interval.
type Cells = BTreeMap<(Vec<(String, String)>, Option<u64>), (Labels, Vec<Cell>)>;

/// Label values of a row, by `by()` position (`None` where missing).
type Labels = Vec<Option<AttrValue>>;

fn row_labels(batch: &RecordBatch, labels: usize, row: usize) -> Result<Labels> {
    (0..labels)
        .map(|i| typed_value(batch, &label_columns(i), row))
        .collect()
}

/// The labels Tempo shows for `by()` values: those present; when none is, the first as `nil`.
fn series_labels(names: &[String], values: Labels) -> Vec<(String, AttrValue)> {
    let present: Vec<(String, AttrValue)> = names
        .iter()
        .zip(values)
        .filter_map(|(name, value)| value.map(|v| (name.clone(), v)))
        .collect();
    if present.is_empty()
        && let Some(first) = names.first()
    {
        return vec![(first.clone(), AttrValue::Str("nil".into()))];
    }
    present
}

fn f64_at(array: &dyn Array, row: usize) -> Option<f64> {
    if let Some(f) = array.as_primitive_opt::<Float64Type>() {
        return f.is_valid(row).then(|| f.value(row));
    }
    let ints = array.as_primitive_opt::<Int64Type>()?;
    ints.is_valid(row).then(|| ints.value(row) as f64)
}

fn read_exemplars(
    batch: &RecordBatch,
    measure: Measure,
    labels: usize,
    out: &mut Vec<(Labels, Exemplar)>,
) -> Result<()> {
    let ids = column(batch, EXEMPLAR_TRACE)?;
    let starts = column(batch, EXEMPLAR_START)?;
    let values = batch.column_by_name(EXEMPLAR_VALUE);
    for row in 0..batch.num_rows() {
        let value = match measure {
            Measure::Count => f64::NAN,
            _ => values
                .and_then(|v| f64_at(v.as_ref(), row))
                .unwrap_or(f64::NAN),
        };
        let trace_id = ids::trace_id_short_hex(&bytes_at(ids, row));
        out.push((
            row_labels(batch, labels, row)?,
            Exemplar {
                labels: vec![("trace:id".into(), AttrValue::Str(trace_id))],
                value,
                timestamp_ms: i64_at(starts, row).unwrap_or_default() / 1_000_000,
            },
        ));
    }
    Ok(())
}

fn function_name(function: &MetricsFunction) -> &'static str {
    use crate::traceql::ast::OverTimeOp::*;
    match function {
        MetricsFunction::Rate { .. } => "rate",
        MetricsFunction::CountOverTime { .. } => "count_over_time",
        MetricsFunction::OverTime { op, .. } => match op {
            Min => "min_over_time",
            Max => "max_over_time",
            Sum => "sum_over_time",
            Avg => "avg_over_time",
            Histogram => "histogram_over_time",
        },
        MetricsFunction::QuantileOverTime { .. } => "quantile_over_time",
        MetricsFunction::Compare { .. } => "compare",
    }
}

/// A numeric constant of metrics arithmetic or a filter threshold (durations in seconds).
fn scalar(value: &Static) -> Result<f64> {
    match value {
        Static::Int(i) => Ok(*i as f64),
        Static::Float(f) => Ok(*f),
        Static::Duration(ns) => Ok(*ns as f64 / NANOS_PER_SECOND as f64),
        other => Err(QueryError::invalid_traceql(format!(
            "`{other}` is not a number to compare or compute with"
        ))),
    }
}

/// `a op b`; division by zero is NaN, and NaN propagates.
fn apply(op: ArithOp, a: f64, b: f64) -> f64 {
    match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div if b == 0.0 => f64::NAN,
        ArithOp::Div => a / b,
        _ => f64::NAN,
    }
}

fn with_scalar(mut set: SeriesSet, f: impl Fn(f64) -> f64) -> SeriesSet {
    for w in &mut set.series {
        for v in &mut w.values {
            *v = f(*v);
        }
        for e in &mut w.exemplars {
            e.value = f(e.value);
        }
    }
    set
}

fn op_symbol(op: ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        _ => "?",
    }
}

/// Series arithmetic: series matched by their labels without `__name__`, a lone unlabelled
/// series broadcast to every series of the other side, unmatched series dropped.
fn binary(op: ArithOp, lhs: SeriesSet, rhs: SeriesSet) -> SeriesSet {
    let name_of = |w: &Working| {
        w.labels
            .iter()
            .find(|(k, _)| k == NAME_LABEL)
            .map(|(_, v)| match v {
                AttrValue::Str(s) => s.clone(),
                _ => String::new(),
            })
    };
    let broadcast = |set: &SeriesSet| {
        set.series.len() == 1 && label_key(&set.series[0].labels, true).is_empty()
    };
    let (lhs_broadcast, rhs_broadcast) = (broadcast(&lhs), broadcast(&rhs));
    let mut out = SeriesSet::default();
    for l in &lhs.series {
        for r in &rhs.series {
            let matched = lhs_broadcast
                || rhs_broadcast
                || label_key(&l.labels, true) == label_key(&r.labels, true);
            if !matched {
                continue;
            }
            let mut labels: Vec<(String, AttrValue)> = Vec::new();
            for (k, v) in l.labels.iter().chain(&r.labels) {
                if k != NAME_LABEL && !labels.iter().any(|(seen, _)| seen == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            if let (Some(a), Some(b)) = (name_of(l), name_of(r)) {
                labels.insert(
                    0,
                    (
                        NAME_LABEL.into(),
                        AttrValue::Str(format!("({a} {} {b})", op_symbol(op))),
                    ),
                );
            }
            let values = l
                .values
                .iter()
                .zip(&r.values)
                .map(|(a, b)| apply(op, *a, *b))
                .collect();
            let mut exemplars = Vec::new();
            if !lhs_broadcast {
                exemplars.extend(l.exemplars.iter().cloned());
            }
            if !rhs_broadcast {
                exemplars.extend(r.exemplars.iter().cloned());
            }
            out.series.push(Working {
                labels,
                values,
                exemplars,
            });
        }
    }
    out
}

fn second_stage(stage: &SecondStage, mut set: SeriesSet) -> Result<SeriesSet> {
    match stage {
        SecondStage::TopK(k) | SecondStage::BottomK(k) => {
            let k = (*k).max(0) as usize;
            if set.series.len() <= k {
                return Ok(set);
            }
            let top = matches!(stage, SecondStage::TopK(_));
            let keys: Vec<_> = set
                .series
                .iter()
                .map(|w| label_key(&w.labels, false))
                .collect();
            let intervals = set.series.iter().map(|w| w.values.len()).max().unwrap_or(0);
            let mut kept = Vec::new();
            for t in 0..intervals {
                let mut ranked: Vec<(f64, usize)> = set
                    .series
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| w.values.get(t).filter(|v| !v.is_nan()).map(|v| (*v, i)))
                    .collect();
                ranked.sort_by(|(a, i), (b, j)| {
                    let by_value = if top { b.total_cmp(a) } else { a.total_cmp(b) };
                    by_value.then_with(|| keys[*i].cmp(&keys[*j]))
                });
                kept.extend(ranked.into_iter().take(k).map(|(_, i)| (i, t)));
            }
            let mut keep = vec![vec![false; intervals]; set.series.len()];
            for (i, t) in kept {
                keep[i][t] = true;
            }
            for (w, keep) in set.series.iter_mut().zip(keep) {
                for (v, keep) in w.values.iter_mut().zip(keep) {
                    if !keep {
                        *v = f64::NAN;
                    }
                }
            }
            Ok(set)
        }
        SecondStage::Filter { op, value } => {
            let threshold = scalar(value)?;
            let passes = |v: f64| match op {
                CmpOp::Eq => v == threshold,
                CmpOp::Neq => v != threshold,
                CmpOp::Gt => v > threshold,
                CmpOp::Gte => v >= threshold,
                CmpOp::Lt => v < threshold,
                CmpOp::Lte => v <= threshold,
            };
            for w in &mut set.series {
                for v in &mut w.values {
                    if !passes(*v) {
                        *v = f64::NAN;
                    }
                }
                w.exemplars.retain(|e| e.value.is_nan() || passes(e.value));
            }
            Ok(set)
        }
    }
}
