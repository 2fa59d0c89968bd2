//! Lowering of checked TraceQL search pipelines to DataFusion plans.
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
//!   subexpressions are folded before lowering ([`rewrite`]).
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
use datafusion::common::{Column, DataFusionError, ScalarValue};
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

use crate::schema::rows::{STATUS_CODE_ERROR, kind_name, status_name};
use crate::schema::{attrs, spans, traces};
use crate::tables::TableKind;
use crate::traceql::ast::{
    AggregateOp, AttrRef, AttrScope, Attribute, BinaryOp, Body, CmpOp, FieldExpr, Intrinsic, Kind,
    Pipeline, Query, ScalarExpr, ScalarFilter, SpansetExpr, SpansetOp, Stage, Static, Status,
    UnaryOp,
};
use crate::traceql::rewrite;

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

/// Why a query could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// Valid TraceQL that spanlake does not run (yet).
    #[error("unsupported TraceQL: {0}")]
    Unsupported(String),
    /// DataFusion refused the plan.
    #[error("could not plan the query: {0}")]
    Plan(#[from] DataFusionError),
}

type Result<T, E = LowerError> = std::result::Result<T, E>;

fn unsupported<T>(what: impl Into<String>) -> Result<T> {
    Err(LowerError::Unsupported(what.into()))
}

/// One row per trace id from the `traces` table, merged across blocks: earliest start, trace
/// duration, root service and root span name (when some block has the root).
pub async fn trace_summary(ctx: &SessionContext) -> Result<DataFrame> {
    const END: &str = "__trace_end";
    let frame = ctx
        .table(TableKind::Traces.name())
        .await?
        .aggregate(
            vec![col(traces::TRACE_ID).alias(TRACE_SUMMARY_ID)],
            vec![
                min(col(traces::START_TIME)).alias(TRACE_SUMMARY_START),
                max(col(traces::END_TIME)).alias(END),
                max(col(traces::ROOT_SERVICE_NAME)).alias(TRACE_SUMMARY_ROOT_SERVICE),
                max(col(traces::ROOT_SPAN_NAME)).alias(TRACE_SUMMARY_ROOT_NAME),
            ],
        )?
        .select(vec![
            col(TRACE_SUMMARY_ID),
            col(TRACE_SUMMARY_START),
            (cast(col(END), DataType::Int64) - cast(col(TRACE_SUMMARY_START), DataType::Int64))
                .alias(TRACE_SUMMARY_DURATION),
            col(TRACE_SUMMARY_ROOT_SERVICE),
            col(TRACE_SUMMARY_ROOT_NAME),
        ])?;
    Ok(frame)
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

    fn spanset(&self, expr: &SpansetExpr, input: DataFrame) -> Result<DataFrame> {
        match expr {
            SpansetExpr::Filter(field) => self.filter(field, input),
            SpansetExpr::Pipeline(pipeline) => self.pipeline(pipeline, input),
            SpansetExpr::Binary { op, lhs, rhs } => {
                let l = self.spanset(lhs, input.clone())?;
                let r = self.spanset(rhs, input.clone())?;
                self.spanset_op(*op, l, r, input)
            }
        }
    }

    fn spanset_op(
        &self,
        op: SpansetOp,
        l: DataFrame,
        r: DataFrame,
        input: DataFrame,
    ) -> Result<DataFrame> {
        use SpansetOp::*;
        if is_grouped(&l) || is_grouped(&r) {
            return unsupported(format!(
                "`{op}` between grouped spansets: spanset operators are not supported for \
                 multiple spansets per trace; consider using coalesce()"
            ));
        }
        match op {
            And => {
                let both = union_keys(l.clone(), r.clone())?;
                let both = semi_on_trace(semi_on_trace(both, l)?, r)?;
                restrict_to_keys(input, both)
            }
            Or => restrict_to_keys(input, union_keys(l, r)?),
            Child | Parent | Descendant | Ancestor | Sibling => {
                structural(r, l, relation(op), JoinType::LeftSemi)
            }
            NotChild | NotParent | NotDescendant | NotAncestor | NotSibling => {
                structural(r, l, relation(op), JoinType::LeftAnti)
            }
            UnionChild | UnionParent | UnionDescendant | UnionAncestor | UnionSibling => {
                let rel = relation(op);
                let rs = structural(r.clone(), l.clone(), rel, JoinType::LeftSemi)?;
                // The L spans that took part: the same relation with the sides' roles swapped.
                let ls = structural_rev(l, r, rel)?;
                restrict_to_keys(input, union_keys(rs, ls)?)
            }
        }
    }

    /// `input` with the columns the lowered expressions read besides those of `spans`: the
    /// trace summary and the child count, as needed.
    fn with_columns(&self, input: DataFrame, lowering: &FieldLowering) -> Result<DataFrame> {
        let mut frame = input;
        if lowering.needs_trace {
            frame = frame.join_on(
                self.traces.clone(),
                JoinType::Inner,
                [col(spans::TRACE_ID).eq(col(TRACE_SUMMARY_ID))],
            )?;
        }
        if lowering.needs_child_count {
            frame = frame.join_on(
                self.child_counts()?,
                JoinType::Left,
                [
                    col(spans::TRACE_ID).eq(col(CHILDREN_TRACE_ID)),
                    col(spans::SPAN_ID).eq(col(CHILDREN_PARENT_ID)),
                ],
            )?;
        }
        Ok(frame)
    }

    /// Per (trace, span id) with children in [`Scope::spans`], how many distinct children.
    fn child_counts(&self) -> Result<DataFrame> {
        Ok(self
            .spans
            .clone()
            .filter(col(spans::PARENT_SPAN_ID).is_not_null())?
            .aggregate(
                vec![
                    col(spans::TRACE_ID).alias(CHILDREN_TRACE_ID),
                    col(spans::PARENT_SPAN_ID).alias(CHILDREN_PARENT_ID),
                ],
                vec![count_distinct(col(spans::SPAN_ID)).alias(CHILDREN_COUNT)],
            )?)
    }

    fn filter(&self, field: &FieldExpr, input: DataFrame) -> Result<DataFrame> {
        let mut lowering = FieldLowering::default();
        let predicate = lowering.predicate(field)?;
        if !lowering.needs_columns() {
            let predicate = predicate.resolve_lambda_variables(input.schema())?.data;
            return Ok(input.filter(predicate)?);
        }
        let columns = columns_of(&input);
        let joined = self.with_columns(input, &lowering)?;
        let predicate = predicate.resolve_lambda_variables(joined.schema())?.data;
        Ok(joined.filter(predicate)?.select(columns)?)
    }

    /// `by(expr)`: adds the group value and key columns to every span.
    fn group_by(&self, expr: &FieldExpr, input: DataFrame) -> Result<DataFrame> {
        let mut lowering = FieldLowering::default();
        let value = lowering.value(expr)?;
        let [text, int, float, boolean] = typed_columns(value);
        let tagged = |tag: &str, e: &Expr| {
            binary_expr(
                lit(tag),
                Operator::StringConcat,
                cast(e.clone(), DataType::Utf8),
            )
        };
        let key = coalesce(vec![
            tagged("s:", &text),
            tagged("i:", &int),
            tagged("f:", &float),
            tagged("b:", &boolean),
            lit("nil"),
        ]);
        // Nested: the new group lies within the group the span already has.
        let key = if is_grouped(&input) {
            binary_expr(
                binary_expr(col(GROUP_KEY), Operator::StringConcat, lit("\u{1f}")),
                Operator::StringConcat,
                key,
            )
        } else {
            key
        };
        let level = group_levels(&input);
        let source = self.with_columns(input.clone(), &lowering)?;
        let mut columns: Vec<Expr> = columns_of(&input)
            .into_iter()
            .filter(|c| !matches!(c, Expr::Column(c) if c.name == GROUP_KEY))
            .collect();
        columns.push(key.alias(GROUP_KEY));
        for (name, e) in group_value(level).iter().zip([text, int, float, boolean]) {
            columns.push(e.alias(name));
        }
        let columns = columns
            .into_iter()
            .map(|e| Ok(e.resolve_lambda_variables(source.schema())?.data))
            .collect::<Result<Vec<_>>>()?;
        Ok(source.select(columns)?)
    }

    fn scalar_filter(&self, filter: &ScalarFilter, input: DataFrame) -> Result<DataFrame> {
        let (ScalarExpr::Aggregate(aggregate), ScalarExpr::Static(value)) =
            (&filter.lhs, &filter.rhs)
        else {
            return unsupported(format!(
                "scalar filter `{} {} {}`: only `aggregate op literal` is supported",
                filter.lhs, filter.op, filter.rhs
            ));
        };
        let Some(threshold) = static_f64(value) else {
            return unsupported(format!("scalar filter against `{value}`"));
        };
        let mut lowering = FieldLowering::default();
        // count() stays an int; the other aggregates are floats.
        let agg = match (&aggregate.op, &aggregate.expr) {
            (AggregateOp::Count, _) => count(lit(1)),
            (op, Some(expr)) => {
                let value = lowering.value(expr)?.as_f64();
                let Some(value) = value else {
                    return unsupported(format!("aggregate over non-numeric `{expr}`"));
                };
                match op {
                    AggregateOp::Min => min(value),
                    AggregateOp::Max => max(value),
                    AggregateOp::Sum => sum(value),
                    AggregateOp::Avg => avg(value),
                    AggregateOp::Count => count(lit(1)),
                }
            }
            (_, None) => return unsupported(format!("aggregate `{aggregate}` without argument")),
        };
        let source = self.with_columns(input.clone(), &lowering)?;
        let agg = agg.resolve_lambda_variables(source.schema())?.data;
        const AGG: &str = "__aggregate";
        let mut keys = vec![spans::TRACE_ID];
        if is_grouped(&input) {
            keys.push(GROUP_KEY);
        }
        let passing = source
            .aggregate(keys.iter().map(|k| col(*k)).collect(), vec![agg.alias(AGG)])?
            .filter(compare_op(
                cast(col(AGG), DataType::Float64),
                cmp_to_binary(filter.op),
                lit(threshold),
            ))?;
        // Keep the passing spansets and attach the value as a spanset attribute; a repeated
        // aggregate replaces the earlier value.
        let attribute = format!("{SPANSET_ATTRIBUTE_PREFIX}{aggregate}");
        let input = input.alias("__f")?;
        let mut columns: Vec<Expr> = input
            .schema()
            .columns()
            .into_iter()
            .filter(|c| c.name != attribute)
            .map(Expr::Column)
            .collect();
        columns.push(qcol("__o", AGG).alias(attribute));
        let on: Vec<Expr> = keys
            .iter()
            .map(|k| qcol("__f", k).eq(qcol("__o", k)))
            .collect();
        Ok(input
            .join_on(passing.alias("__o")?, JoinType::Inner, on)?
            .select(columns)?)
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

/// `frame` restricted to traces that also appear in `other`.
fn semi_on_trace(frame: DataFrame, other: DataFrame) -> Result<DataFrame> {
    let ids = other.select(vec![col(spans::TRACE_ID)])?.alias("__ids")?;
    Ok(frame.alias("__f")?.join_on(
        ids,
        JoinType::LeftSemi,
        [qcol("__f", spans::TRACE_ID).eq(qcol("__ids", spans::TRACE_ID))],
    )?)
}

/// The distinct (trace_id, span_id) keys of two frames.
fn union_keys(a: DataFrame, b: DataFrame) -> Result<DataFrame> {
    let keys = || vec![col(spans::TRACE_ID), col(spans::SPAN_ID)];
    Ok(a.select(keys())?.union_distinct(b.select(keys())?)?)
}

/// The rows of `input` whose (trace_id, span_id) is in `keys`.
fn restrict_to_keys(input: DataFrame, keys: DataFrame) -> Result<DataFrame> {
    Ok(input.alias("__i")?.join_on(
        keys.alias("__k")?,
        JoinType::LeftSemi,
        [
            qcol("__i", spans::TRACE_ID).eq(qcol("__k", spans::TRACE_ID)),
            qcol("__i", spans::SPAN_ID).eq(qcol("__k", spans::SPAN_ID)),
        ],
    )?)
}

/// A structural relation between an `l` span and an `r` span.
#[derive(Clone, Copy)]
enum Relation {
    /// r's parent is l.
    Child,
    /// r is l's parent.
    Parent,
    /// r descends from l.
    Descendant,
    /// r is an ancestor of l.
    Ancestor,
    /// r and l are different spans with the same parent.
    Sibling,
}

fn relation(op: SpansetOp) -> Relation {
    use SpansetOp::*;
    match op {
        Child | NotChild | UnionChild => Relation::Child,
        Parent | NotParent | UnionParent => Relation::Parent,
        Descendant | NotDescendant | UnionDescendant => Relation::Descendant,
        Ancestor | NotAncestor | UnionAncestor => Relation::Ancestor,
        Sibling | NotSibling | UnionSibling | And | Or => Relation::Sibling,
    }
}

/// The nested-set predicate of `rel` between the spans of relations `l` and `r`. Unknown
/// numbers (0) never satisfy it.
fn relation_predicate(rel: Relation, l: &str, r: &str) -> Expr {
    let left = |q: &str| qcol(q, spans::NESTED_SET_LEFT);
    let right = |q: &str| qcol(q, spans::NESTED_SET_RIGHT);
    let parent = |q: &str| qcol(q, spans::NESTED_SET_PARENT);
    let known = |q: &str| left(q).not_eq(lit(0i32));
    let known_both = known(l).and(known(r));
    match rel {
        Relation::Child => known_both.and(parent(r).eq(left(l))),
        Relation::Parent => known_both.and(parent(l).eq(left(r))),
        Relation::Descendant => known_both
            .and(left(l).lt(left(r)))
            .and(right(r).lt(right(l))),
        Relation::Ancestor => known_both
            .and(left(r).lt(left(l)))
            .and(right(l).lt(right(r))),
        Relation::Sibling => known_both
            .and(parent(r).not_eq(lit(0i32)))
            .and(parent(r).eq(parent(l)))
            .and(qcol(r, spans::SPAN_ID).not_eq(qcol(l, spans::SPAN_ID))),
    }
}

/// The `r` spans that do (semi) or do not (anti) stand in `rel` to some `l` span.
fn structural(r: DataFrame, l: DataFrame, rel: Relation, join: JoinType) -> Result<DataFrame> {
    Ok(r.alias("__r")?.join_on(
        l.alias("__l")?,
        join,
        [
            qcol("__r", spans::TRACE_ID).eq(qcol("__l", spans::TRACE_ID)),
            relation_predicate(rel, "__l", "__r"),
        ],
    )?)
}

/// The `l` spans that stand in `rel` to some `r` span.
fn structural_rev(l: DataFrame, r: DataFrame, rel: Relation) -> Result<DataFrame> {
    Ok(l.alias("__l")?.join_on(
        r.alias("__r")?,
        JoinType::LeftSemi,
        [
            qcol("__r", spans::TRACE_ID).eq(qcol("__l", spans::TRACE_ID)),
            relation_predicate(rel, "__l", "__r"),
        ],
    )?)
}

/// A field value, one expression per run-time type. Each is NULL on rows where the value has
/// another type or is missing; `None` means the value can never have that type.
#[derive(Clone, Default)]
struct Value {
    str: Option<Expr>,
    int: Option<Expr>,
    float: Option<Expr>,
    bool: Option<Expr>,
    duration: Option<Expr>,
    status: Option<Expr>,
    kind: Option<Expr>,
    /// True where the value exists (whatever its type); `None` for the literal `nil`.
    present: Option<Expr>,
}

impl Value {
    fn of(slot: fn(&mut Value) -> &mut Option<Expr>, expr: Expr, present: Expr) -> Self {
        let mut value = Value {
            present: Some(present),
            ..Value::default()
        };
        *slot(&mut value) = Some(expr);
        value
    }

    fn literal(slot: fn(&mut Value) -> &mut Option<Expr>, expr: Expr) -> Self {
        Self::of(slot, expr, lit(true))
    }

    /// A column that is always present (an intrinsic).
    fn column(slot: fn(&mut Value) -> &mut Option<Expr>, name: &str) -> Self {
        Self::of(slot, col(name), lit(true))
    }

    /// A nullable expression: present where it is not NULL.
    fn nullable(slot: fn(&mut Value) -> &mut Option<Expr>, expr: Expr) -> Self {
        let present = expr.clone().is_not_null();
        Self::of(slot, expr, present)
    }

    /// The numeric slots with their kinds.
    fn numeric(&self) -> Vec<(Expr, Numeric)> {
        [
            (&self.int, Numeric::Int),
            (&self.duration, Numeric::Duration),
            (&self.float, Numeric::Float),
        ]
        .into_iter()
        .filter_map(|(e, kind)| e.clone().map(|e| (e, kind)))
        .collect()
    }

    /// The value as a float, NULL when it is not a number.
    fn as_f64(&self) -> Option<Expr> {
        let parts: Vec<Expr> = self
            .numeric()
            .into_iter()
            .map(|(e, _)| cast(e, DataType::Float64))
            .collect();
        one_of(parts)
    }
}

/// The run-time kinds of numbers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numeric {
    Int,
    Duration,
    Float,
}

impl Numeric {
    /// Ints and durations are both i64 nanoseconds when compared.
    fn is_integral(self) -> bool {
        self != Numeric::Float
    }
}

/// The first non-NULL of `parts`; `None` when there are none.
fn one_of(mut parts: Vec<Expr>) -> Option<Expr> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(coalesce(parts)),
    }
}

fn any_of(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(Expr::or)
}

/// Lowers field expressions; remembers which columns besides those of `spans` they read
/// (see [`Scope::with_columns`]).
#[derive(Default)]
struct FieldLowering {
    needs_trace: bool,
    needs_child_count: bool,
    /// Inside an `event…`/`link…` comparison: the list column and its element variable.
    element: Option<(&'static str, Expr)>,
}

/// The lambda variable bound to one event or link.
const ELEMENT: &str = "__element";

impl FieldLowering {
    /// True when the expressions read columns that must be joined in first.
    fn needs_columns(&self) -> bool {
        self.needs_trace || self.needs_child_count
    }

    /// A boolean expression that is true exactly where TraceQL keeps the span.
    fn predicate(&mut self, field: &FieldExpr) -> Result<Expr> {
        let value = self.boolean_operand(field)?;
        Ok(match value.bool {
            Some(b) => coalesce(vec![b, lit(false)]),
            None => lit(false),
        })
    }

    /// The value of `field` where a boolean is expected. A bare event or link value there,
    /// `{ event.handled }`, means that some element's value is `true`.
    fn boolean_operand(&mut self, field: &FieldExpr) -> Result<Value> {
        if let FieldExpr::Attr(attr) = field
            && self.element.is_none()
            && let Some(list) = element_list(attr)
        {
            return self.element_comparison(
                list,
                BinaryOp::Eq,
                field,
                &FieldExpr::Static(Static::Bool(true)),
            );
        }
        self.value(field)
    }

    fn value(&mut self, field: &FieldExpr) -> Result<Value> {
        match field {
            FieldExpr::Static(s) => Ok(static_value(s)),
            FieldExpr::Attr(attr) => self.attr(attr),
            FieldExpr::Unary { op, expr } => {
                let v = self.value(expr)?;
                Ok(match op {
                    UnaryOp::Not => Value {
                        bool: v.bool.map(|b| !b),
                        present: Some(lit(true)),
                        ..Value::default()
                    },
                    UnaryOp::Neg => Value {
                        int: v.int.map(|e| -e),
                        float: v.float.map(|e| -e),
                        duration: v.duration.map(|e| -e),
                        present: Some(lit(true)),
                        ..Value::default()
                    },
                })
            }
            FieldExpr::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs),
        }
    }

    fn binary(&mut self, op: BinaryOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Result<Value> {
        let is_test = op.is_comparison() || matches!(op, BinaryOp::Regex | BinaryOp::NotRegex);
        if is_test && self.element.is_none() {
            let mut lists = element_lists(lhs);
            lists.extend(element_lists(rhs));
            lists.dedup();
            match lists.as_slice() {
                [] => {}
                [list] => return self.element_comparison(list, op, lhs, rhs),
                _ => {
                    return unsupported(format!(
                        "`{lhs} {op} {rhs}`: a comparison between event and link values"
                    ));
                }
            }
        }
        if op == BinaryOp::Or
            && let Some(value) = self.or_to_in_list(lhs, rhs)?
        {
            return Ok(value);
        }
        if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
            let FieldExpr::Static(Static::String(pattern)) = rhs else {
                return unsupported(format!(
                    "the right side of a regex operator must be a string literal, not `{rhs}`"
                ));
            };
            let subject = self.value(lhs)?;
            let anchored = format!("^(?s:{pattern})$");
            let operator = if op == BinaryOp::Regex {
                Operator::RegexMatch
            } else {
                Operator::RegexNotMatch
            };
            let matched = subject.str.map(|s| binary_expr(s, operator, lit(anchored)));
            return Ok(boolean(matched));
        }
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let (lhs_value, rhs_value) = (self.boolean_operand(lhs)?, self.boolean_operand(rhs)?);
            let (Some(a), Some(b)) = (lhs_value.bool, rhs_value.bool) else {
                return Ok(boolean(Some(lit(false))));
            };
            let both = a.clone().is_not_null().and(b.clone().is_not_null());
            let combined = if op == BinaryOp::And {
                a.and(b)
            } else {
                a.or(b)
            };
            return Ok(boolean(Some(both.and(combined))));
        }
        let lhs_value = self.value(&strip_trace_id_literal(lhs, rhs))?;
        let rhs_value = self.value(&strip_trace_id_literal(rhs, lhs))?;
        if op.is_arithmetic() {
            return Ok(arithmetic(op, &lhs_value, &rhs_value));
        }
        Ok(boolean(Some(compare(op, &lhs_value, &rhs_value))))
    }

    /// A comparison reading the elements of `list`: true when some element (event or link)
    /// of the span satisfies it. The other operand may read the span too (the lambda
    /// captures its columns).
    fn element_comparison(
        &mut self,
        list: &'static str,
        op: BinaryOp,
        lhs: &FieldExpr,
        rhs: &FieldExpr,
    ) -> Result<Value> {
        self.element = Some((list, lambda_var(ELEMENT)));
        let tested = self.binary(op, lhs, rhs);
        self.element = None;
        let predicate = match tested?.bool {
            Some(b) => coalesce(vec![b, lit(false)]),
            None => lit(false),
        };
        let any = array_any_match(col(list), lambda([ELEMENT], predicate));
        Ok(boolean(Some(coalesce(vec![any, lit(false)]))))
    }

    /// `x = a || x = b || …` on one attribute with literals of one type (string or int):
    /// one `IN` list per value slot instead of a chain of ORs. `None` when the disjunction
    /// has another shape.
    fn or_to_in_list(&mut self, lhs: &FieldExpr, rhs: &FieldExpr) -> Result<Option<Value>> {
        let mut disjuncts = Vec::new();
        flatten_or(lhs, &mut disjuncts);
        flatten_or(rhs, &mut disjuncts);
        let mut subject = None;
        let mut literals = Vec::new();
        for d in disjuncts {
            let FieldExpr::Binary {
                op: BinaryOp::Eq,
                lhs,
                rhs,
            } = d
            else {
                return Ok(None);
            };
            let (attr, literal) = match (lhs.as_ref(), rhs.as_ref()) {
                (FieldExpr::Attr(a), FieldExpr::Static(s))
                | (FieldExpr::Static(s), FieldExpr::Attr(a)) => (a, s),
                _ => return Ok(None),
            };
            if *subject.get_or_insert(attr) != attr
                || element_list(attr).is_some()
                || *attr == AttrRef::Intrinsic(Intrinsic::TraceId)
            {
                return Ok(None);
            }
            literals.push(literal);
        }
        let Some(subject) = subject else {
            return Ok(None);
        };
        let value = self.attr(subject)?;
        let in_slot = |slot: Option<Expr>, items: Vec<Expr>| {
            slot.map(|e| coalesce(vec![in_list(e, items, false), lit(false)]))
        };
        let matched = if let Some(strings) = literals
            .iter()
            .map(|l| match l {
                Static::String(s) => Some(lit(s.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            in_slot(value.str, strings)
        } else if let Some(ints) = literals
            .iter()
            .map(|l| match l {
                Static::Int(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            // As `compare`: ints and durations compare as i64, floats as f64.
            let as_int = || ints.iter().map(|i| lit(*i)).collect::<Vec<_>>();
            let as_float = ints.iter().map(|i| lit(*i as f64)).collect();
            let parts = [
                in_slot(value.int, as_int()),
                in_slot(value.duration, as_int()),
                in_slot(value.float.map(|f| cast(f, DataType::Float64)), as_float),
            ];
            any_of(parts.into_iter().flatten().collect())
        } else {
            return Ok(None);
        };
        Ok(Some(boolean(matched)))
    }

    fn attr(&mut self, attr: &AttrRef) -> Result<Value> {
        if let Some(list) = element_list(attr) {
            return match &self.element {
                Some((current, element)) if *current == list => element_value(attr, element),
                _ => unsupported(format!(
                    "`{attr}` outside a comparison: event and link values are only lowered \
                     inside comparisons such as `{attr} = 1` or `{attr} > span.x + 1`"
                )),
            };
        }
        match attr {
            AttrRef::Intrinsic(i) => self.intrinsic(*i),
            AttrRef::Attribute(a) => attribute(a),
        }
    }

    fn intrinsic(&mut self, intrinsic: Intrinsic) -> Result<Value> {
        use Intrinsic::*;
        let hex = |c: &str| id_hex().call(vec![col(c)]);
        Ok(match intrinsic {
            Duration => Value::column(|v| &mut v.duration, spans::DURATION_NS),
            Name => Value::column(|v| &mut v.str, spans::NAME),
            Status => Value::column(|v| &mut v.status, spans::STATUS_CODE),
            StatusMessage => Value::column(|v| &mut v.str, spans::STATUS_MESSAGE),
            Kind => Value::column(|v| &mut v.kind, spans::KIND),
            SpanId => Value::literal(|v| &mut v.str, hex(spans::SPAN_ID)),
            ParentId => Value::nullable(|v| &mut v.str, hex(spans::PARENT_SPAN_ID)),
            TraceId => Value::literal(|v| &mut v.str, ltrim(vec![hex(spans::TRACE_ID), lit("0")])),
            NestedSetLeft => Value::column(|v| &mut v.int, spans::NESTED_SET_LEFT),
            NestedSetRight => Value::column(|v| &mut v.int, spans::NESTED_SET_RIGHT),
            NestedSetParent => Value::column(|v| &mut v.int, spans::NESTED_SET_PARENT),
            InstrumentationName => Value::column(|v| &mut v.str, spans::SCOPE_NAME),
            InstrumentationVersion => Value::column(|v| &mut v.str, spans::SCOPE_VERSION),
            TraceDuration => {
                self.needs_trace = true;
                Value::nullable(|v| &mut v.duration, col(TRACE_SUMMARY_DURATION))
            }
            TraceRootName => {
                self.needs_trace = true;
                Value::nullable(|v| &mut v.str, col(TRACE_SUMMARY_ROOT_NAME))
            }
            TraceRootService => {
                self.needs_trace = true;
                Value::nullable(|v| &mut v.str, col(TRACE_SUMMARY_ROOT_SERVICE))
            }
            ChildCount => {
                self.needs_child_count = true;
                let count = coalesce(vec![col(CHILDREN_COUNT), lit(0i64)]);
                Value::literal(|v| &mut v.int, cast(count, DataType::Int64))
            }
            EventName | EventTimeSinceStart | LinkTraceId | LinkSpanId | Parent => {
                return unsupported(format!("the intrinsic `{}`", AttrRef::Intrinsic(intrinsic)));
            }
        })
    }
}

/// `trace:id` literals are compared with leading zeros stripped, as the ids are.
fn strip_trace_id_literal(this: &FieldExpr, other: &FieldExpr) -> FieldExpr {
    match (this, other) {
        (
            FieldExpr::Static(Static::String(s)),
            FieldExpr::Attr(AttrRef::Intrinsic(Intrinsic::TraceId)),
        ) => FieldExpr::Static(Static::String(s.trim_start_matches('0').to_string())),
        _ => this.clone(),
    }
}

fn id_hex() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(spanlake_udfs::IdHex::default()))
}

fn boolean(expr: Option<Expr>) -> Value {
    Value {
        bool: Some(expr.unwrap_or(lit(false))),
        present: Some(lit(true)),
        ..Value::default()
    }
}

fn status_text(status: Status) -> &'static str {
    status_name(match status {
        Status::Error => STATUS_CODE_ERROR,
        Status::Ok => 1,
        Status::Unset => 0,
    })
}

fn kind_text(kind: Kind) -> &'static str {
    kind_name(match kind {
        Kind::Unspecified => 0,
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    })
}

fn static_value(s: &Static) -> Value {
    match s {
        Static::Nil => Value::default(),
        Static::Int(i) => Value::literal(|v| &mut v.int, lit(*i)),
        Static::Float(f) => Value::literal(|v| &mut v.float, lit(*f)),
        Static::String(s) => Value::literal(|v| &mut v.str, lit(s.clone())),
        Static::Bool(b) => Value::literal(|v| &mut v.bool, lit(*b)),
        Static::Duration(d) => Value::literal(|v| &mut v.duration, lit(*d)),
        Static::Status(s) => Value::literal(|v| &mut v.status, lit(status_text(*s))),
        Static::Kind(k) => Value::literal(|v| &mut v.kind, lit(kind_text(*k))),
    }
}

/// A literal as a float, for scalar filters.
fn static_f64(s: &Static) -> Option<f64> {
    match s {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        Static::Duration(d) => Some(*d as f64),
        _ => None,
    }
}

/// The typed map columns of an attribute scope (`span_attrs` or `resource_attrs`), or of an
/// event or link element (`attrs`).
struct MapColumns {
    str: String,
    int: String,
    float: String,
    bool: String,
    json: String,
}

impl MapColumns {
    fn of(prefix: &str) -> Self {
        Self {
            str: attrs::column_name(prefix, attrs::STR),
            int: attrs::column_name(prefix, attrs::INT),
            float: attrs::column_name(prefix, attrs::FLOAT),
            bool: attrs::column_name(prefix, attrs::BOOL),
            json: attrs::column_name(prefix, attrs::JSON),
        }
    }

    fn value(&self, key: &str) -> Value {
        self.value_in(None, key)
    }

    /// The attribute `key` of the maps in the struct `base`, or of the table's columns.
    fn value_in(&self, base: Option<&Expr>, key: &str) -> Value {
        let get = |column: &str| {
            let map = match base {
                Some(base) => get_field(base.clone(), column),
                None => col(column),
            };
            get_field(map, key)
        };
        let present = [&self.str, &self.int, &self.float, &self.bool, &self.json]
            .into_iter()
            .map(|c| get(c).is_not_null())
            .reduce(Expr::or);
        Value {
            str: Some(get(&self.str)),
            int: Some(get(&self.int)),
            float: Some(get(&self.float)),
            bool: Some(get(&self.bool)),
            present,
            ..Value::default()
        }
    }
}

fn attribute(a: &Attribute) -> Result<Value> {
    if a.parent {
        return unsupported(format!("parent attributes such as `parent.{}`", a.name));
    }
    let span = || MapColumns::of(spans::SPAN_ATTRS).value(&a.name);
    let resource = || MapColumns::of(spans::RESOURCE_ATTRS).value(&a.name);
    match a.scope {
        AttrScope::Span => Ok(span()),
        AttrScope::Resource => Ok(resource()),
        AttrScope::None => {
            // The span's value when the span has the attribute at all, else the resource's.
            let (s, r) = (span(), resource());
            let on_span = s.present.clone().unwrap_or(lit(false));
            let pick = |a: Option<Expr>, b: Option<Expr>| match (a, b) {
                (Some(a), Some(b)) => Some(when(on_span.clone(), a).otherwise(b).ok()?),
                _ => None,
            };
            Ok(Value {
                str: pick(s.str, r.str),
                int: pick(s.int, r.int),
                float: pick(s.float, r.float),
                bool: pick(s.bool, r.bool),
                present: any_of([s.present, r.present].into_iter().flatten().collect()),
                ..Value::default()
            })
        }
        AttrScope::Instrumentation => Ok(MapColumns::of(spans::SCOPE_ATTRS).value(&a.name)),
        AttrScope::Event | AttrScope::Link => unsupported(format!(
            "attributes of scope `{}` (`{}`)",
            if a.scope == AttrScope::Event {
                "event"
            } else {
                "link"
            },
            a.name
        )),
    }
}

/// The list column an attribute reads elements of (`events`, `links`), if any.
fn element_list(attr: &AttrRef) -> Option<&'static str> {
    match attr {
        AttrRef::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => {
            Some(spans::EVENTS)
        }
        AttrRef::Intrinsic(Intrinsic::LinkTraceId | Intrinsic::LinkSpanId) => Some(spans::LINKS),
        AttrRef::Attribute(a) if !a.parent && a.scope == AttrScope::Event => Some(spans::EVENTS),
        AttrRef::Attribute(a) if !a.parent && a.scope == AttrScope::Link => Some(spans::LINKS),
        _ => None,
    }
}

/// The value of an event or link attribute in the list element `element`.
fn element_value(attr: &AttrRef, element: &Expr) -> Result<Value> {
    let field = |name: &str| get_field(element.clone(), name);
    let hex = |name: &str| id_hex().call(vec![field(name)]);
    Ok(match attr {
        AttrRef::Intrinsic(Intrinsic::EventName) => {
            Value::literal(|v| &mut v.str, field(spans::event::NAME))
        }
        AttrRef::Intrinsic(Intrinsic::EventTimeSinceStart) => {
            let ns = |e: Expr| cast(e, DataType::Int64);
            let since = ns(field(spans::event::TIME)) - ns(col(spans::START_TIME));
            Value::literal(|v| &mut v.duration, since)
        }
        AttrRef::Intrinsic(Intrinsic::LinkTraceId) => {
            Value::literal(|v| &mut v.str, hex(spans::link::TRACE_ID))
        }
        AttrRef::Intrinsic(Intrinsic::LinkSpanId) => {
            Value::literal(|v| &mut v.str, hex(spans::link::SPAN_ID))
        }
        AttrRef::Attribute(a) if a.scope == AttrScope::Event => {
            MapColumns::of(spans::event::ATTRS).value_in(Some(element), &a.name)
        }
        AttrRef::Attribute(a) if a.scope == AttrScope::Link => {
            MapColumns::of(spans::link::ATTRS).value_in(Some(element), &a.name)
        }
        other => return unsupported(format!("`{other}`")),
    })
}

/// The distinct list columns (`events`, `links`) that `field` reads elements of.
fn element_lists(field: &FieldExpr) -> Vec<&'static str> {
    let mut attrs = Vec::new();
    collect_field_attrs(field, &mut attrs);
    let mut lists: Vec<&'static str> = attrs.iter().filter_map(element_list).collect();
    lists.sort_unstable();
    lists.dedup();
    lists
}

/// The operands of a chain of `||`, left to right.
fn flatten_or<'a>(field: &'a FieldExpr, out: &mut Vec<&'a FieldExpr>) {
    match field {
        FieldExpr::Binary {
            op: BinaryOp::Or,
            lhs,
            rhs,
        } => {
            flatten_or(lhs, out);
            flatten_or(rhs, out);
        }
        other => out.push(other),
    }
}

fn compare_op(a: Expr, op: Operator, b: Expr) -> Expr {
    binary_expr(a, op, b)
}

fn cmp_to_binary(op: CmpOp) -> Operator {
    match op {
        CmpOp::Eq => Operator::Eq,
        CmpOp::Neq => Operator::NotEq,
        CmpOp::Lt => Operator::Lt,
        CmpOp::Lte => Operator::LtEq,
        CmpOp::Gt => Operator::Gt,
        CmpOp::Gte => Operator::GtEq,
    }
}

/// `a op b` for `= != < <= > >=`: true when some pair of same-typed (or both numeric) values
/// satisfies it; missing values and ill-typed pairs give false.
fn compare(op: BinaryOp, a: &Value, b: &Value) -> Expr {
    let a_nil = a.present.is_none();
    let b_nil = b.present.is_none();
    if a_nil || b_nil {
        // `x = nil` / `x != nil`: existence tests.
        let other = if a_nil { &b.present } else { &a.present };
        let present = other.clone().unwrap_or(lit(false));
        return match op {
            BinaryOp::Eq => !present,
            BinaryOp::Neq => present,
            _ => lit(false),
        };
    }
    let operator = match op {
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::Neq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::Lte => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::Gte => Operator::GtEq,
        _ => return lit(false),
    };
    let ordered = !matches!(op, BinaryOp::Eq | BinaryOp::Neq);
    let mut pairs = Vec::new();
    let mut same = |x: &Option<Expr>, y: &Option<Expr>| {
        if let (Some(x), Some(y)) = (x, y) {
            pairs.push(binary_expr(x.clone(), operator, y.clone()));
        }
    };
    same(&a.str, &b.str);
    if !ordered {
        same(&a.bool, &b.bool);
        same(&a.status, &b.status);
        same(&a.kind, &b.kind);
    }
    for (x, x_kind) in a.numeric() {
        for (y, y_kind) in b.numeric() {
            pairs.push(if x_kind.is_integral() && y_kind.is_integral() {
                binary_expr(x.clone(), operator, y)
            } else {
                binary_expr(
                    cast(x.clone(), DataType::Float64),
                    operator,
                    cast(y, DataType::Float64),
                )
            });
        }
    }
    match any_of(pairs) {
        Some(e) => coalesce(vec![e, lit(false)]),
        None => lit(false),
    }
}

/// `a op b` for `+ - * / % ^`: int with int stays int (except `^`), everything else is f64.
fn arithmetic(op: BinaryOp, a: &Value, b: &Value) -> Value {
    let operator = match op {
        BinaryOp::Add => Operator::Plus,
        BinaryOp::Sub => Operator::Minus,
        BinaryOp::Mul => Operator::Multiply,
        BinaryOp::Div => Operator::Divide,
        BinaryOp::Mod => Operator::Modulo,
        _ => Operator::Plus,
    };
    let apply = |x: Expr, y: Expr| {
        if op == BinaryOp::Pow {
            power(x, y)
        } else {
            binary_expr(x, operator, y)
        }
    };
    let f64_of = |e: Expr| cast(e, DataType::Float64);
    let mut int = None;
    let mut floats = Vec::new();
    for (x, x_kind) in a.numeric() {
        for (y, y_kind) in b.numeric() {
            if x_kind == Numeric::Int && y_kind == Numeric::Int && op != BinaryOp::Pow {
                int = Some(apply(x.clone(), y));
            } else {
                floats.push(apply(f64_of(x.clone()), f64_of(y)));
            }
        }
    }
    Value {
        int,
        float: one_of(floats),
        present: Some(lit(true)),
        ..Value::default()
    }
}

/// Adds every attribute `field` reads to `out`, once.
fn collect_field_attrs(field: &FieldExpr, out: &mut Vec<AttrRef>) {
    match field {
        FieldExpr::Static(_) => {}
        FieldExpr::Attr(a) => {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        FieldExpr::Unary { expr, .. } => collect_field_attrs(expr, out),
        FieldExpr::Binary { lhs, rhs, .. } => {
            collect_field_attrs(lhs, out);
            collect_field_attrs(rhs, out);
        }
    }
}

fn collect_spanset_attrs(expr: &SpansetExpr, out: &mut Vec<AttrRef>) {
    match expr {
        SpansetExpr::Filter(f) => collect_field_attrs(f, out),
        SpansetExpr::Binary { lhs, rhs, .. } => {
            collect_spanset_attrs(lhs, out);
            collect_spanset_attrs(rhs, out);
        }
        SpansetExpr::Pipeline(p) => collect_pipeline_attrs(p, out),
    }
}

fn collect_pipeline_attrs(pipeline: &Pipeline, out: &mut Vec<AttrRef>) {
    for stage in &pipeline.stages {
        match stage {
            Stage::Spanset(e) => collect_spanset_attrs(e, out),
            Stage::Select(attrs) => {
                for a in attrs {
                    collect_field_attrs(&FieldExpr::Attr(a.clone()), out);
                }
            }
            Stage::ScalarFilter(_) | Stage::GroupBy(_) | Stage::Coalesce => {}
        }
    }
}

/// How a search result shows an attribute: its key and one expression per value type over
/// `spans` (string, int, float, bool), or `None` for attributes search results leave out
/// (name, duration, ids, trace-level intrinsics, `span:childCount`) or
/// that cannot be lowered.
pub fn output_attribute(attr: &AttrRef) -> Option<(String, [Expr; 4])> {
    use Intrinsic::*;
    let key = match attr {
        AttrRef::Attribute(a) => a.name.clone(),
        AttrRef::Intrinsic(
            Duration | Name | SpanId | ParentId | TraceId | TraceDuration | TraceRootName
            | TraceRootService,
        ) => return None,
        AttrRef::Intrinsic(i) => {
            let printed = AttrRef::Intrinsic(*i).to_string();
            printed
                .rsplit_once(':')
                .map_or(printed.clone(), |(_, n)| n.to_string())
        }
    };
    let mut lowering = FieldLowering::default();
    let value = lowering.attr(attr).ok()?;
    if lowering.needs_columns() {
        // `span:childCount` values live in joined columns, not on `spans`.
        return None;
    }
    Some((key, typed_columns(value)))
}

/// A value as string (also status and kind), int (also duration), float and bool
/// expressions, each NULL unless the value has that type.
fn typed_columns(value: Value) -> [Expr; 4] {
    let typed = |e: Option<Expr>, ty: DataType| cast(e.unwrap_or(lit(ScalarValue::Null)), ty);
    let text = one_of(
        [value.str, value.status, value.kind]
            .into_iter()
            .flatten()
            .collect(),
    );
    let int = one_of([value.int, value.duration].into_iter().flatten().collect());
    [
        typed(text, DataType::Utf8),
        typed(int, DataType::Int64),
        typed(value.float, DataType::Float64),
        typed(value.bool, DataType::Boolean),
    ]
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
        let plan = plan(r#"{ span.a = "x" || span.a = "y" || span.a = "z" }"#);
        assert!(
            plan.contains(r#"IN ([Utf8("x"), Utf8("y"), Utf8("z")])"#),
            "{plan}"
        );
    }

    #[test]
    fn int_equalities_use_in_lists_per_numeric_type() {
        let plan = plan("{ span.code = 200 || span.code = 503 }");
        assert!(plan.contains("IN ([Int64(200), Int64(503)])"), "{plan}");
        assert!(plan.contains("IN ([Float64(200), Float64(503)])"), "{plan}");
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
