//! Lowering of checked TraceQL search pipelines to DataFusion plans.
//!
//! Split by concern: [`filters`] (spanset filters and field expressions), [`structural`]
//! (spanset and structural operators), [`pipeline`] (`by()` and scalar filters) and [`select`]
//! (the attributes a search shows), [`trace_level`] (searches the `traces` table alone
//! decides). This module holds the pipeline walk and the trace summary.
//!
//! A TraceQL search is evaluated per trace, but nothing here walks traces: every spanset is a
//! [`DataFrame`] of `spans` rows, and the per-trace semantics come from joins on `trace_id`.
//!
//! - A filter `{ expr }` is a `Filter` on its input spans. Attribute values keep their type:
//!   each value is lowered to one expression per run-time type (string, int, float, bool,
//!   duration, status, kind), NULL where the span's value has another type or is missing, and
//!   a comparison is the OR of the comparisons between compatible types, NULL turned to false.
//! - A comparison reading `event…`/`link…` values: `array_any_match` over the
//!   `events`/`links` list with a lambda (some element satisfies it); the other operand may
//!   read the span, whose columns the lambda captures. A bare value (`{ event.handled }`)
//!   means some element's value is `true`. In `by()` and aggregates such values are
//!   unsupported.
//! - `span:childCount`: a left join, on trace id and span id, of per-span child counts
//!   computed from the spans the query runs over.
//! - `x = a || x = b || …` on one attribute with literals of one type: an `IN` list. Constant
//!   subexpressions are folded before lowering (`traceql::rewrite`).
//! - `{A} && {B}`, `{A} || {B}`: semi-joins on `trace_id` and a distinct union of span keys.
//! - Structural operators: joins on `trace_id` with nested-set predicates (semi for the plain
//!   forms, anti for the negated ones, both directions for the union forms).
//! - `by(e)`: adds [`GROUP_KEY`]/[`group_value`] columns; later stages work per
//!   (trace, group). `coalesce()` drops them again.
//! - Scalar filters: an `Aggregate` grouped by trace (and group), joined back so the value
//!   rides along as a spanset attribute column ([`SPANSET_ATTRIBUTE_PREFIX`]).
//!
//! Trace-level intrinsics read the `traces` table, aggregated per trace id (a trace may have a
//! row in several blocks) by [`trace_summary`]. This module builds plans; it never runs them.
//!
//! Decisions where the reference leaves a choice:
//! - unscoped `.x` takes the span attribute when the span has `x` with any type, the resource
//!   attribute otherwise (the reference engine's in-memory rule);
//! - `!` on a missing value and `^` between ints are not evaluation errors: the former is false,
//!   the latter is ordinary float `pow` (the reference engine computes rhs^lhs);
//! - `sum()` adds every numeric value as f64, whatever the type of the first one;
//! - regexes are anchored as `^(?s:…)$`, as the reference engine compiles them;
//! - search results do not list `span:childCount` values as span attributes.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions::math::expr_fn::power;
use datafusion::functions::string::expr_fn::ltrim;
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::functions_nested::expr_fn::array_any_match;
use datafusion::logical_expr::expr_fn::{lambda, lambda_var};
use datafusion::logical_expr::{
    Expr, JoinType, Operator, ScalarUDF, binary_expr, cast, in_list, when,
};
use datafusion::prelude::{SessionContext, col, lit};

use super::QueryError;
use crate::schema::TableKind;
use crate::schema::rows::{STATUS_CODE_ERROR, kind_name, status_name};
use crate::schema::{attrs, spans, traces};
use crate::traceql::ast::{
    AggregateOp, AttrRef, AttrScope, Attribute, BinaryOp, Body, CmpOp, FieldExpr, Intrinsic, Kind,
    Pipeline, Query, ScalarExpr, ScalarFilter, SpansetExpr, SpansetOp, Stage, Static, Status,
    UnaryOp,
};
use crate::traceql::{LiteralRegex, rewrite};
use spanlake_udfs::IdKey;

mod filters;
pub mod metrics;
mod pipeline;
mod select;
mod structural;
mod trace_level;

use filters::*;
use select::*;

pub use filters::map_value;
pub use select::output_attribute;
pub use trace_level::SpanCount;

/// Trace id column of [`trace_summary`].
pub const TRACE_SUMMARY_ID: &str = "__trace_id";
/// Earliest span start of a trace, in [`trace_summary`] (timestamp).
pub const TRACE_SUMMARY_START: &str = "__trace_start";
/// Trace duration in nanoseconds, in [`trace_summary`].
pub const TRACE_SUMMARY_DURATION: &str = "__trace_duration_ns";
/// Root service name, in [`trace_summary`].
pub const TRACE_SUMMARY_ROOT_SERVICE: &str = "__trace_root_service";
/// Root span name, in [`trace_summary`].
pub const TRACE_SUMMARY_ROOT_NAME: &str = "__trace_root_name";

type Result<T> = std::result::Result<T, QueryError>;

/// Valid TraceQL that spanlake does not run.
fn unsupported<T>(what: impl std::fmt::Display) -> Result<T> {
    Err(QueryError::invalid_traceql(format_args!(
        "unsupported: {what}"
    )))
}

/// Each trace's id as a 128-bit integer ([`spanlake_udfs::IdKey`]), which DataFusion hashes
/// and groups as a primitive rather than through its row format: over every trace, faster
/// and steadier than grouping on the 16-byte binary.
const TRACE_KEY: &str = "__trace_key";

/// One row per trace id from the `traces` table, merged across blocks: earliest start, trace
/// duration, root service and root span name (when some block has the root).
pub async fn trace_summary(ctx: &SessionContext) -> Result<DataFrame> {
    summarize(ctx.table(TableKind::Traces.name()).await?)
}

/// [`trace_summary`] of `rows`, a frame with the columns of `traces` (typically some
/// traces' rows of it).
pub fn summarize(rows: DataFrame) -> Result<DataFrame> {
    summary_of(rows, true, Vec::new())
}

/// The times of each trace of `rows` (trace id, earliest start, duration: the columns of
/// [`summarize`] but its root names), with `extra` aggregates (each aliased) over each
/// trace's rows kept as columns beside them. Over many traces, the root names' string
/// aggregates cost several times what the rest does, and a search shows them for its chosen
/// traces only.
pub fn trace_times_with(rows: DataFrame, extra: Vec<Expr>) -> Result<DataFrame> {
    summary_of(rows, false, extra)
}

/// The summary of each trace of `rows`, grouped on [`TRACE_KEY`]: with or without the root
/// names, and with `extra` aggregates.
fn summary_of(rows: DataFrame, roots: bool, extra: Vec<Expr>) -> Result<DataFrame> {
    const END: &str = "__trace_end";
    let extra_columns = extra
        .iter()
        .map(|e| Ok(col(e.name_for_alias()?)))
        .collect::<Result<Vec<_>>>()?;
    let mut aggregates = vec![
        min(col(traces::START_TIME)).alias(TRACE_SUMMARY_START),
        max(col(traces::END_TIME)).alias(END),
    ];
    let mut columns = vec![
        id_of_key(col(TRACE_KEY)).alias(TRACE_SUMMARY_ID),
        col(TRACE_SUMMARY_START),
        (cast(col(END), DataType::Int64) - cast(col(TRACE_SUMMARY_START), DataType::Int64))
            .alias(TRACE_SUMMARY_DURATION),
    ];
    if roots {
        aggregates.extend([
            max(col(traces::ROOT_SERVICE_NAME)).alias(TRACE_SUMMARY_ROOT_SERVICE),
            max(col(traces::ROOT_SPAN_NAME)).alias(TRACE_SUMMARY_ROOT_NAME),
        ]);
        columns.extend([
            col(TRACE_SUMMARY_ROOT_SERVICE),
            col(TRACE_SUMMARY_ROOT_NAME),
        ]);
    }
    aggregates.extend(extra);
    columns.extend(extra_columns);
    Ok(rows
        .aggregate(
            vec![key_of_id(col(traces::TRACE_ID)).alias(TRACE_KEY)],
            aggregates,
        )?
        .select(columns)?)
}

/// `id_key(id)`: a trace id as the 128-bit key [`spanlake_udfs::IdKey`] describes.
fn key_of_id(id: Expr) -> Expr {
    static ID_KEY: std::sync::LazyLock<Arc<ScalarUDF>> =
        std::sync::LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(IdKey::to_key())));
    ID_KEY.call(vec![id])
}

/// `key_id(key)`: the trace id of a key made by [`key_of_id`].
fn id_of_key(key: Expr) -> Expr {
    static KEY_ID: std::sync::LazyLock<Arc<ScalarUDF>> =
        std::sync::LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(IdKey::to_id())));
    KEY_ID.call(vec![key])
}

/// After `by()`, the column naming each span's group: the group value rendered with a type
/// tag, or `nil`, so that it is never NULL and joins on it are plain equi-joins.
pub const GROUP_KEY: &str = "__group_key";
/// After the `level`-th `by()` of a pipeline (from 0), that group's value as string, int,
/// float and bool columns (at most one is non-NULL). `by(a) | by(b)` nests: the spans carry
/// the values of both levels and [`GROUP_KEY`] names the pair.
pub fn group_value(level: usize) -> [String; 4] {
    ["str", "int", "float", "bool"].map(|slot| format!("__group{level}_{slot}"))
}

/// The `by()` expressions in force after `pipeline`, outermost first: those after the last
/// `coalesce()`, including those of a parenthesised pipeline stage.
fn group_exprs(pipeline: &Pipeline) -> Vec<FieldExpr> {
    let mut exprs = Vec::new();
    for stage in &pipeline.stages {
        match stage {
            Stage::GroupBy(expr) => exprs.push(expr.clone()),
            Stage::Coalesce => exprs.clear(),
            Stage::Spanset(SpansetExpr::Pipeline(inner)) => exprs.extend(group_exprs(inner)),
            _ => {}
        }
    }
    exprs
}

/// How many `by()` levels `frame` carries.
fn group_levels(frame: &DataFrame) -> usize {
    let schema = frame.schema();
    (0..)
        .take_while(|level| schema.has_column_with_unqualified_name(&group_value(*level)[0]))
        .count()
}

/// Columns named this prefix followed by a printed aggregate (`count()`, `avg(span:duration)`)
/// carry the aggregate's value for the span's spanset, after a scalar filter.
pub const SPANSET_ATTRIBUTE_PREFIX: &str = "__spanset_attribute:";

/// A lowered search: the matched spans and the attributes to show on them.
pub struct LoweredSearch {
    /// Matched spans, with the columns of `spans`, plus [`GROUP_KEY`] and the [`group_value`]
    /// columns of each level in `group_by` when the pipeline ends grouped, plus one
    /// [`SPANSET_ATTRIBUTE_PREFIX`] column per aggregate value attached to the spansets.
    pub spans: DataFrame,
    /// The `by()` expressions the output spansets are split by, outermost first; empty when
    /// the output is one spanset per trace.
    pub group_by: Vec<FieldExpr>,
    /// Attributes referenced by the query or listed in `select()`, in first-use order.
    pub attributes: Vec<AttrRef>,
}

/// Columns of the per-span child counts joined in for `span:childCount`.
const CHILDREN_TRACE_ID: &str = "__children_trace_id";
const CHILDREN_PARENT_ID: &str = "__children_parent_id";
const CHILDREN_COUNT: &str = "__children_count";

/// True when `frame` carries a `by()` group.
fn is_grouped(frame: &DataFrame) -> bool {
    frame.schema().has_column_with_unqualified_name(GROUP_KEY)
}

/// The columns of `frame`, as they are qualified in it.
fn columns_of(frame: &DataFrame) -> Vec<Expr> {
    frame
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect()
}

/// Lowers search queries over one session's tables.
pub struct Lowerer {
    traces: DataFrame,
}

impl Lowerer {
    /// A lowerer reading trace-level intrinsics from `traces` (see [`trace_summary`]).
    pub fn new(traces: DataFrame) -> Self {
        Self { traces }
    }

    /// Lowers a search query evaluated over `input`, a frame with the columns of `spans`.
    ///
    /// `input` is also where `span:childCount` counts children.
    pub fn search(&self, query: &Query, input: DataFrame) -> Result<LoweredSearch> {
        let Body::Pipeline(pipeline) = &query.body else {
            return unsupported("only spanset pipelines can be searched, not metrics queries");
        };
        let spans = self.pipeline(pipeline, input)?;
        let mut attributes = Vec::new();
        collect_pipeline_attrs(pipeline, &mut attributes);
        let mut group_by = group_exprs(pipeline);
        group_by.truncate(group_levels(&spans));
        Ok(LoweredSearch {
            spans,
            group_by,
            attributes,
        })
    }

    /// Lowers a pipeline over `input`, a frame with the columns of `spans`; each stage maps
    /// the spans of the previous one. Constant subexpressions are folded first
    /// ([`rewrite`]).
    pub fn pipeline(&self, pipeline: &Pipeline, input: DataFrame) -> Result<DataFrame> {
        let scope = Scope {
            traces: &self.traces,
            spans: input.clone(),
        };
        scope.pipeline(&rewrite::pipeline(pipeline), input)
    }
}

/// One lowering: the trace summaries and the spans the query runs over, which
/// `span:childCount` reads.
struct Scope<'a> {
    traces: &'a DataFrame,
    spans: DataFrame,
}

impl Scope<'_> {
    fn pipeline(&self, pipeline: &Pipeline, input: DataFrame) -> Result<DataFrame> {
        let mut frame = input;
        for stage in &pipeline.stages {
            frame = match stage {
                Stage::Spanset(SpansetExpr::Filter(field)) => self.filter(field, frame)?,
                Stage::Spanset(expr) if is_grouped(&frame) => {
                    return unsupported(format!(
                        "`{expr}` after by(): spanset operators are not supported for \
                         multiple spansets per trace; consider using coalesce()"
                    ));
                }
                Stage::Spanset(expr) => self.spanset(expr, frame)?,
                Stage::ScalarFilter(filter) => self.scalar_filter(filter, frame)?,
                Stage::Select(_) => frame,
                Stage::GroupBy(expr) => self.group_by(expr, frame)?,
                Stage::Coalesce => frame.select(span_columns())?,
            };
        }
        Ok(frame)
    }
}

/// The columns of `spans`, unqualified, in order.
fn span_columns() -> Vec<Expr> {
    spans::schema()
        .fields()
        .iter()
        .map(|f| Expr::Column(Column::from_name(f.name())))
        .collect()
}

fn qcol(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), name))
}

#[cfg(test)]
mod tests {
    use arrow::array::RecordBatch;

    use super::*;

    /// The optimized logical plan of `query` over an empty `spans` table, as EXPLAIN shows it.
    fn plan(query: &str) -> String {
        let ctx = SessionContext::new();
        let spans = ctx
            .read_batch(RecordBatch::new_empty(spans::schema()))
            .unwrap();
        let traces = ctx.read_empty().unwrap();
        let query = crate::traceql::check(query).unwrap();
        let lowered = Lowerer::new(traces).search(&query, spans).unwrap();
        let plan = lowered.spans.into_optimized_plan().unwrap();
        plan.display_indent().to_string()
    }

    #[test]
    fn equalities_on_one_attribute_become_one_in_list() {
        // (DataFusion turns lists of up to three values back into ORs.)
        let plan = plan(r#"{ span.a = "w" || span.a = "x" || span.a = "y" || span.a = "z" }"#);
        assert!(
            plan.contains(r#"IN ([Utf8("w"), Utf8("x"), Utf8("y"), Utf8("z")])"#),
            "{plan}"
        );
    }

    #[test]
    fn int_equalities_use_in_lists_per_numeric_type() {
        let plan =
            plan("{ span.code = 200 || span.code = 404 || span.code = 500 || span.code = 503 }");
        assert!(
            plan.contains("IN ([Int64(200), Int64(404), Int64(500), Int64(503)])"),
            "{plan}"
        );
        assert!(
            plan.contains("IN ([Float64(200), Float64(404), Float64(500), Float64(503)])"),
            "{plan}"
        );
    }

    #[test]
    fn equalities_on_different_attributes_stay_ors() {
        let plan = plan(r#"{ span.a = "x" || span.b = "y" }"#);
        assert!(!plan.contains(" IN ("), "{plan}");
    }

    #[test]
    fn constant_filters_fold_before_planning() {
        let plan = plan("{ duration > 1s + 500ms }");
        assert!(plan.contains("Float64(1500000000)"), "{plan}");
        assert!(!plan.contains("+"), "{plan}");
    }

    #[test]
    fn child_count_is_a_join() {
        // The optimizer may turn the left join into a semi join, as the filter rejects NULLs.
        let plan = plan("{ span:childCount > 1 }");
        assert_eq!(plan.matches(" Join: ").count(), 1, "{plan}");
        assert!(plan.contains("count(DISTINCT"), "{plan}");
    }
}
