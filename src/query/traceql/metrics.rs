//! Lowering of a TraceQL metrics leaf, `pipeline | function`, to a plan over the spans the
//! pipeline matches: one row per (interval, labels) with the partial aggregate and, when asked,
//! the newest span of the row as an exemplar candidate ([`Lowerer::metrics_aggregate`]);
//! `compare()` has its own plan ([`Lowerer::metrics_compare`]).
//!
//! Intervals are right-closed: interval `k` holds the spans whose start `t` satisfies
//! `start + k·step < t ≤ start + (k+1)·step`, so it is `(t - start - 1) / step` in integer
//! nanoseconds, the right-closed form of `date_bin(step, t, start)`.
//!
//! The values measured are Tempo's: `duration` in seconds; other numbers in their own units
//! (so `trace:duration` stays in nanoseconds in min/max/sum/avg); quantiles and histograms
//! read every duration in seconds. Histogram buckets are powers of two of the integral value
//! (nanoseconds for durations), values below 2 left out. Quantiles go through the mergeable
//! `sketch` aggregate, so they also read float attributes.

use datafusion::functions::math::expr_fn::{ceil, log2};
use datafusion::functions_aggregate::expr_fn::first_value;

use super::*;
use crate::traceql::ast::{MetricsFunction, OverTimeOp};

/// Interval index of a span (Int64).
pub const INTERVAL: &str = "__interval";
/// Spans counted (Int64).
pub const COUNT: &str = "__count";
/// Sum, minimum or maximum of the measured value (Float64).
pub const VALUE: &str = "__value";
/// Sketch of the measured value (Binary, `spanlake_udfs::Sketch` encoding).
pub const SKETCH: &str = "__sketch";
/// Histogram bucket upper bound (Float64).
pub const BUCKET: &str = "__bucket";
/// Span start in Unix nanoseconds (Int64), on observed spans.
const START_NS: &str = "__start_ns";
/// The newest span of an aggregate row: its start (Int64 ns), trace id and measured value.
pub const EXEMPLAR_START: &str = "__exemplar_start";
/// See [`EXEMPLAR_START`].
pub const EXEMPLAR_TRACE: &str = "__exemplar_trace";
/// See [`EXEMPLAR_START`].
pub const EXEMPLAR_VALUE: &str = "__exemplar_value";
/// On `compare()` rows: whether the spans are in the selection (Boolean).
pub const SELECTED: &str = "__selected";
/// On `compare()` rows: the attribute, as its label reads (`span.x`, `resource.x`, `name`).
pub const ATTRIBUTE: &str = "__attribute";
/// On `compare()` rows: the value's type (`str`, `int`, `float`, `bool`).
pub const VALUE_TYPE: &str = "__value_type";
/// On `compare()` rows: the value as text.
pub const VALUE_TEXT: &str = "__value_text";

/// Columns of the `i`-th `by()` label: string, int, float and bool (at most one non-NULL).
pub fn label_columns(i: usize) -> [String; 4] {
    ["str", "int", "float", "bool"].map(|slot| format!("__label{i}_{slot}"))
}

/// The time grid of a metrics query, in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Left (open) end of the first interval.
    pub start_ns: i64,
    /// Right (closed) end of the last interval.
    pub end_ns: i64,
    /// Interval length.
    pub step_ns: i64,
}

impl Grid {
    /// The nanoseconds the grid covers, `(start, end]`, as an inclusive window.
    pub fn window(&self) -> crate::time::TimeRange {
        crate::time::TimeRange {
            start_ns: self.start_ns.saturating_add(1),
            end_ns: self.end_ns,
        }
    }

    /// The interval of a span starting at `start_ns` (an Int64 expression).
    fn interval(&self, start_ns: Expr) -> Expr {
        ((start_ns - lit(self.start_ns) - lit(1i64)) / lit(self.step_ns)).alias(INTERVAL)
    }

    /// How many intervals the grid has.
    pub fn intervals(&self) -> usize {
        ((self.end_ns - self.start_ns + self.step_ns - 1) / self.step_ns).max(0) as usize
    }
}

/// What the aggregate plan computes per (interval, labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `rate`, `count_over_time`: [`COUNT`].
    Count,
    /// `sum_over_time`: [`VALUE`] (sum) and [`COUNT`].
    Sum,
    /// `min_over_time`: [`VALUE`] (minimum) and [`COUNT`].
    Min,
    /// `max_over_time`: [`VALUE`] (maximum) and [`COUNT`].
    Max,
    /// `avg_over_time`: [`VALUE`] (sum) and [`COUNT`].
    Avg,
    /// `quantile_over_time`: [`SKETCH`].
    Quantile,
    /// `histogram_over_time`: [`COUNT`] per [`BUCKET`].
    Histogram,
}

impl Measure {
    /// The measure of a first-stage function.
    pub fn of(function: &MetricsFunction) -> Result<Self> {
        Ok(match function {
            MetricsFunction::Rate { .. } | MetricsFunction::CountOverTime { .. } => Self::Count,
            MetricsFunction::OverTime { op, .. } => match op {
                OverTimeOp::Sum => Self::Sum,
                OverTimeOp::Min => Self::Min,
                OverTimeOp::Max => Self::Max,
                OverTimeOp::Avg => Self::Avg,
                OverTimeOp::Histogram => Self::Histogram,
            },
            MetricsFunction::QuantileOverTime { .. } => Self::Quantile,
            MetricsFunction::Compare { .. } => {
                return unsupported("compare() as a measure: it has its own plan");
            }
        })
    }
}

/// True when `pipeline` decides about each span on its own: only spanset filters (and
/// `select`), none reading `span:childCount`. Such a pipeline needs only the spans that start
/// in the window, not the whole traces around them.
pub fn is_span_local(pipeline: &Pipeline) -> bool {
    let mut attrs = Vec::new();
    collect_pipeline_attrs(pipeline, &mut attrs);
    let filters_only = pipeline.stages.iter().all(|stage| {
        matches!(
            stage,
            Stage::Spanset(SpansetExpr::Filter(_)) | Stage::Select(_)
        )
    });
    filters_only && !attrs.contains(&AttrRef::Intrinsic(Intrinsic::ChildCount))
}

/// The `by()` attributes and the measured attribute of a first-stage function.
pub fn function_attrs(function: &MetricsFunction) -> (&[AttrRef], Option<&AttrRef>) {
    match function {
        MetricsFunction::Rate { by } | MetricsFunction::CountOverTime { by } => (by, None),
        MetricsFunction::OverTime { attr, by, .. }
        | MetricsFunction::QuantileOverTime { attr, by, .. } => (by, Some(attr)),
        MetricsFunction::Compare { .. } => (&[], None),
    }
}

impl Lowerer {
    /// The spans `pipeline` matches over `input` that start in `grid`, with the columns of
    /// `spans`, and their start as Int64 nanoseconds.
    fn matched_in_grid(
        &self,
        pipeline: &Pipeline,
        input: DataFrame,
        grid: Grid,
    ) -> Result<(DataFrame, Expr)> {
        let start = cast(col(spans::START_TIME), DataType::Int64);
        let in_grid = self
            .pipeline(pipeline, input)?
            .select(span_columns())?
            .filter(
                start
                    .clone()
                    .gt(lit(grid.start_ns))
                    .and(start.clone().lt_eq(lit(grid.end_ns))),
            )?;
        Ok((in_grid, start))
    }

    /// The spans of the leaf that fall in `grid`, one row each: [`START_NS`], [`INTERVAL`],
    /// the label columns of each `by()` attribute, and the measured value as [`VALUE`]
    /// (histograms: the bucket bound as [`BUCKET`]), rows without a value left out.
    fn observed(
        &self,
        pipeline: &Pipeline,
        function: &MetricsFunction,
        input: DataFrame,
        grid: Grid,
    ) -> Result<DataFrame> {
        let measure = Measure::of(function)?;
        let (by, attr) = function_attrs(function);
        let (in_grid, start) = self.matched_in_grid(pipeline, input.clone(), grid)?;
        let mut lowering = FieldLowering::default();
        let mut columns = vec![
            col(spans::TRACE_ID),
            col(spans::SPAN_ID),
            start.clone().alias(START_NS),
            grid.interval(start),
        ];
        for (i, attr) in by.iter().enumerate() {
            let value = lowering.attr(attr)?;
            for (expr, name) in typed_columns(value).into_iter().zip(label_columns(i)) {
                columns.push(expr.alias(name));
            }
        }
        let measured = match attr {
            Some(attr) => Some(measured_value(measure, attr, lowering.attr(attr)?)?),
            None => None,
        };
        let scope = Scope {
            traces: &self.traces,
            spans: input,
        };
        let frame = scope.with_columns(in_grid, &lowering)?;
        let frame = match measured {
            Some(value) => {
                let name = if measure == Measure::Histogram {
                    BUCKET
                } else {
                    VALUE
                };
                columns.push(value.clone().alias(name));
                frame.filter(value.is_not_null())?
            }
            None => frame,
        };
        Ok(frame.select(columns)?)
    }

    /// One row per interval and label values (and histogram bucket) with the partial aggregate
    /// of `measure`: [`COUNT`], [`VALUE`] or [`SKETCH`] as [`Measure`] says. With `exemplars`,
    /// each row also names its newest span ([`EXEMPLAR_START`], [`EXEMPLAR_TRACE`],
    /// [`EXEMPLAR_VALUE`]): exemplar candidates from the same scan.
    pub fn metrics_aggregate(
        &self,
        pipeline: &Pipeline,
        function: &MetricsFunction,
        input: DataFrame,
        grid: Grid,
        exemplars: bool,
    ) -> Result<DataFrame> {
        let measure = Measure::of(function)?;
        let (by, _) = function_attrs(function);
        let observed = self.observed(pipeline, function, input, grid)?;
        let mut keys = vec![col(INTERVAL)];
        keys.extend((0..by.len()).flat_map(label_columns).map(col));
        let value = || col(VALUE);
        let mut aggregates = match measure {
            Measure::Count => vec![count(lit(1)).alias(COUNT)],
            Measure::Histogram => {
                keys.push(col(BUCKET));
                vec![count(lit(1)).alias(COUNT)]
            }
            Measure::Sum | Measure::Avg => {
                vec![sum(value()).alias(VALUE), count(value()).alias(COUNT)]
            }
            Measure::Min => vec![min(value()).alias(VALUE), count(value()).alias(COUNT)],
            Measure::Max => vec![max(value()).alias(VALUE), count(value()).alias(COUNT)],
            Measure::Quantile => {
                let sketch = datafusion::logical_expr::AggregateUDF::new_from_impl(
                    spanlake_udfs::SketchAggregate::build(),
                );
                vec![sketch.call(vec![value()]).alias(SKETCH)]
            }
        };
        if exemplars {
            let newest = || {
                vec![
                    col(START_NS).sort(false, false),
                    col(spans::TRACE_ID).sort(true, false),
                ]
            };
            aggregates.push(first_value(col(START_NS), newest()).alias(EXEMPLAR_START));
            aggregates.push(first_value(col(spans::TRACE_ID), newest()).alias(EXEMPLAR_TRACE));
            for measured in [VALUE, BUCKET] {
                if observed.schema().has_column_with_unqualified_name(measured) {
                    aggregates.push(first_value(col(measured), newest()).alias(EXEMPLAR_VALUE));
                    break;
                }
            }
        }
        Ok(observed.aggregate(keys, aggregates)?)
    }
}

impl Lowerer {
    /// For `compare({ filter }, …)`: per selection side, interval, attribute and value, how
    /// many spans of the leaf in `grid` carry that value ([`COUNT`]). The attributes are the
    /// span's and resource's typed attributes and the intrinsics `name`, `status` and `kind`;
    /// a span is selected when `filter` holds and, with `bounds`, it starts inside them.
    pub fn metrics_compare(
        &self,
        pipeline: &Pipeline,
        filter: &FieldExpr,
        bounds: Option<(i64, i64)>,
        input: DataFrame,
        grid: Grid,
    ) -> Result<DataFrame> {
        const ENTRIES: &str = "__entries";
        let (in_grid, start) = self.matched_in_grid(pipeline, input.clone(), grid)?;
        let mut lowering = FieldLowering::default();
        let mut selected = lowering.predicate(filter)?;
        if let Some((from, to)) = bounds {
            selected = selected.and(
                start
                    .clone()
                    .gt(lit(from))
                    .and(start.clone().lt_eq(lit(to))),
            );
        }
        let scope = Scope {
            traces: &self.traces,
            spans: input,
        };
        let joined = scope.with_columns(in_grid, &lowering)?;
        let selected = selected.resolve_lambda_variables(joined.schema())?.data;
        let interval = grid.interval(start);
        let mut map_columns = Vec::new();
        for prefix in [spans::SPAN_ATTRS, spans::RESOURCE_ATTRS] {
            for suffix in [attrs::STR, attrs::INT, attrs::FLOAT, attrs::BOOL] {
                map_columns.push((prefix, suffix, attrs::column_name(prefix, suffix)));
            }
        }
        let mut columns = vec![interval, selected.alias(SELECTED)];
        columns.extend([spans::NAME, spans::STATUS_CODE, spans::KIND].map(col));
        columns.extend(map_columns.iter().map(|(_, _, c)| col(c.as_str())));
        let spans_in_grid = joined.select(columns)?;
        let row = |attribute: Expr, value: Expr, ty: &str| {
            vec![
                col(INTERVAL),
                col(SELECTED),
                attribute.alias(ATTRIBUTE),
                lit(ty.to_string()).alias(VALUE_TYPE),
                cast(value, DataType::Utf8).alias(VALUE_TEXT),
            ]
        };
        let mut parts = Vec::new();
        for (label, column) in [
            ("name", spans::NAME),
            ("status", spans::STATUS_CODE),
            ("kind", spans::KIND),
        ] {
            parts.push(
                spans_in_grid
                    .clone()
                    .select(row(lit(label), col(column), attrs::STR))?,
            );
        }
        for (prefix, suffix, column) in &map_columns {
            let scope = if *prefix == spans::SPAN_ATTRS {
                "span."
            } else {
                "resource."
            };
            let entries = spans_in_grid
                .clone()
                .select(vec![
                    col(INTERVAL),
                    col(SELECTED),
                    datafusion::functions_nested::expr_fn::map_entries(col(column.as_str()))
                        .alias(ENTRIES),
                ])?
                .unnest_columns(&[ENTRIES])?;
            let key = get_field(col(ENTRIES), "key");
            let value = get_field(col(ENTRIES), "value");
            let attribute = datafusion::functions::string::expr_fn::concat(vec![lit(scope), key]);
            parts.push(entries.select(row(attribute, value, suffix))?);
        }
        let mut all = parts.remove(0);
        for part in parts {
            all = all.union(part)?;
        }
        Ok(all.filter(col(VALUE_TEXT).is_not_null())?.aggregate(
            vec![
                col(SELECTED),
                col(INTERVAL),
                col(ATTRIBUTE),
                col(VALUE_TYPE),
                col(VALUE_TEXT),
            ],
            vec![count(lit(1)).alias(COUNT)],
        )?)
    }
}

/// The measured value of `attr` for `measure`, NULL where it is missing or not a number.
fn measured_value(measure: Measure, attr: &AttrRef, value: Value) -> Result<Expr> {
    let seconds = |ns: Expr| cast(ns, DataType::Float64) / lit(1e9);
    let expr = match measure {
        Measure::Sum | Measure::Min | Measure::Max | Measure::Avg => {
            if *attr == AttrRef::Intrinsic(Intrinsic::Duration) {
                value.duration.map(seconds)
            } else {
                value.as_f64()
            }
        }
        Measure::Quantile => one_of(
            [
                value.duration.map(seconds),
                value.int.map(|e| cast(e, DataType::Float64)),
                value.float.map(|e| cast(e, DataType::Float64)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        Measure::Histogram => {
            let bound = |e: Expr| {
                let v = cast(e, DataType::Float64);
                when(v.clone().gt_eq(lit(2.0)), power(lit(2.0), ceil(log2(v))))
                    .otherwise(lit(ScalarValue::Float64(None)))
            };
            let is_duration = value.duration.is_some();
            let parts = [value.duration, value.int]
                .into_iter()
                .flatten()
                .map(bound)
                .collect::<std::result::Result<Vec<Expr>, _>>()?;
            one_of(parts).map(|b| if is_duration { b / lit(1e9) } else { b })
        }
        Measure::Count => None,
    };
    match expr {
        Some(e) => Ok(e),
        None => unsupported(format!("`{attr}` is not a number to measure")),
    }
}

/// The label name Tempo gives a `by()` attribute.
pub fn label_name(attr: &AttrRef) -> String {
    match attr {
        AttrRef::Intrinsic(Intrinsic::Name) => "name".into(),
        AttrRef::Intrinsic(Intrinsic::Status) => "status".into(),
        AttrRef::Intrinsic(Intrinsic::Kind) => "kind".into(),
        AttrRef::Intrinsic(Intrinsic::TraceRootService) => "rootServiceName".into(),
        AttrRef::Intrinsic(Intrinsic::TraceRootName) => "rootName".into(),
        AttrRef::Intrinsic(Intrinsic::TraceDuration) => "traceDuration".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::RecordBatch;

    use super::*;
    use crate::traceql::ast::{Body, MetricsExpr};

    const GRID: Grid = Grid {
        start_ns: 0,
        end_ns: 600_000_000_000,
        step_ns: 60_000_000_000,
    };

    /// The optimized logical plan of the aggregate of a one-leaf metrics query over an empty
    /// `spans` table.
    fn plan(query: &str) -> String {
        let ctx = SessionContext::new();
        spanlake_udfs::register_all(&ctx);
        let spans = ctx
            .read_batch(RecordBatch::new_empty(spans::schema()))
            .unwrap();
        let traces = ctx.read_empty().unwrap();
        let query = crate::traceql::check(query).unwrap();
        let Body::Metrics(MetricsExpr::Leaf { pipeline, function }) = &query.body else {
            panic!("not a metrics leaf: {query:?}");
        };
        let frame = Lowerer::new(traces)
            .metrics_aggregate(pipeline, function, spans, GRID, false)
            .unwrap();
        frame
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string()
    }

    #[test]
    fn intervals_are_right_closed_integer_buckets() {
        let plan = plan("{ } | count_over_time()");
        assert!(
            plan.contains("Int64(1)) / Int64(60000000000) AS __interval"),
            "{plan}"
        );
        assert!(
            plan.contains("start_time > TimestampNanosecond(0, "),
            "{plan}"
        );
        assert!(
            plan.contains("start_time <= TimestampNanosecond(600000000000, "),
            "{plan}"
        );
    }

    #[test]
    fn each_function_aggregates_what_it_needs() {
        for (query, aggregate) in [
            ("{ } | rate()", "count(Int32(1)) AS __count"),
            ("{ } | sum_over_time(duration)", "sum("),
            ("{ } | min_over_time(span.x)", "min("),
            ("{ } | max_over_time(span.x)", "max("),
            ("{ } | avg_over_time(duration)", "count("),
            ("{ } | quantile_over_time(duration, .9)", "sketch("),
            ("{ } | histogram_over_time(duration)", "log2("),
        ] {
            let plan = plan(query);
            assert!(plan.contains(aggregate), "{query}: {plan}");
        }
    }

    #[test]
    fn durations_are_measured_in_seconds() {
        let plan = plan("{ } | max_over_time(duration)");
        assert!(plan.contains("Float64(1000000000)"), "{plan}");
    }

    #[test]
    fn only_the_columns_used_are_read() {
        let plan =
            plan("{ span.a = 1 } | quantile_over_time(duration, .5) by (resource.service.name)");
        for unused in ["events", "links", "scope_attrs", "span_attrs_json"] {
            assert!(!plan.contains(unused), "{unused} read: {plan}");
        }
    }

    #[test]
    fn span_local_pipelines_are_recognised() {
        let local = |q: &str| {
            let query = crate::traceql::check(q).unwrap();
            let Body::Metrics(MetricsExpr::Leaf { pipeline, .. }) = &query.body else {
                panic!("{q}");
            };
            is_span_local(pipeline)
        };
        assert!(local("{ status = error } | rate()"));
        assert!(local("{ span.a = 1 } | { name = \"x\" } | rate()"));
        assert!(!local("{ } >> { } | rate()"));
        assert!(!local("{ } | count() > 2 | rate()"));
        assert!(!local("{ span:childCount > 1 } | rate()"));
        assert!(!local("{ } && { name = \"x\" } | rate()"));
    }
}
