//! Static checks on a parsed query (reference §4.4 and the validation rules of §5).
//!
//! Walks the tree once. Parts are checked before the whole, so an unsupported construct
//! nested inside an expression is reported as unsupported rather than as a type error, and an
//! invalid aggregate argument is reported before the "complex scalar filter" is rejected as
//! unsupported, the order Tempo's conformance list expects.

use super::ast::*;

/// Why a parsed query was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    /// The query is ill-typed or breaks a rule of the language.
    #[error("invalid query: {0}")]
    Invalid(String),
    /// The query is valid TraceQL that is not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, ValidateError>;

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(ValidateError::Invalid(message.into()))
}

fn unsupported<T>(message: impl Into<String>) -> Result<T> {
    Err(ValidateError::Unsupported(message.into()))
}

/// Most attributes a metrics `by()` may list (reference §5.3).
const MAX_BY_ATTRIBUTES: usize = 5;
/// Most `compare()` values per attribute.
const MAX_COMPARE_TOP_N: i64 = 1000;

/// Checks a parsed query.
pub fn validate(query: &Query) -> Result<()> {
    match &query.body {
        Body::Pipeline(p) => pipeline(p),
        Body::ScalarPipelineFilter(f) => {
            scalar_pipeline(&f.lhs)?;
            scalar_pipeline(&f.rhs)?;
            unsupported(
                "comparisons between scalar pipelines such as `({ } | count()) > 2` are not supported",
            )
        }
        Body::Metrics(m) => metrics(m),
    }
}

fn pipeline(p: &Pipeline) -> Result<()> {
    p.stages.iter().try_for_each(stage)
}

fn stage(s: &Stage) -> Result<()> {
    match s {
        Stage::Spanset(s) => spanset(s),
        Stage::ScalarFilter(f) => scalar_filter(f),
        Stage::GroupBy(e) => {
            field(e)?;
            if !references_span(e) {
                return invalid(format!(
                    "by({e}) must reference an attribute or intrinsic of the span"
                ));
            }
            Ok(())
        }
        Stage::Coalesce => Ok(()),
        Stage::Select(attrs) => attrs.iter().try_for_each(attr_ref),
    }
}

fn spanset(s: &SpansetExpr) -> Result<()> {
    match s {
        SpansetExpr::Filter(e) => {
            let ty = field(e)?;
            if !matches!(ty, Type::Bool | Type::Attribute) {
                return invalid(format!(
                    "a spanset filter must be a boolean expression, but {e} is {ty}"
                ));
            }
            Ok(())
        }
        SpansetExpr::Binary { lhs, rhs, .. } => {
            spanset(lhs)?;
            spanset(rhs)
        }
        SpansetExpr::Pipeline(p) => pipeline(p),
    }
}

fn scalar_filter(f: &ScalarFilter) -> Result<()> {
    scalar(&f.lhs)?;
    scalar(&f.rhs)?;
    match (&f.lhs, &f.rhs) {
        (ScalarExpr::Aggregate(_), ScalarExpr::Static(_)) => Ok(()),
        _ => unsupported(format!(
            "scalar filter {} {} {}: only `aggregate op number` is supported",
            f.lhs, f.op, f.rhs
        )),
    }
}

fn scalar(e: &ScalarExpr) -> Result<()> {
    match e {
        ScalarExpr::Aggregate(a) => aggregate(a),
        ScalarExpr::Static(_) => Ok(()),
        ScalarExpr::Binary { lhs, rhs, .. } => {
            scalar(lhs)?;
            scalar(rhs)
        }
    }
}

fn aggregate(a: &Aggregate) -> Result<()> {
    let Some(e) = &a.expr else {
        return Ok(());
    };
    let ty = field(e)?;
    if !(ty.is_numeric() || ty == Type::Attribute) {
        return invalid(format!("{a}: the argument must be numeric, but it is {ty}"));
    }
    if !references_span(e) {
        return invalid(format!(
            "{a}: the argument must reference an attribute or intrinsic of the span"
        ));
    }
    Ok(())
}

fn scalar_pipeline(e: &ScalarPipelineExpr) -> Result<()> {
    match e {
        ScalarPipelineExpr::Pipeline {
            pipeline: p,
            aggregate: a,
        } => {
            pipeline(p)?;
            aggregate(a)
        }
        ScalarPipelineExpr::Static(_) => Ok(()),
        ScalarPipelineExpr::Binary { lhs, rhs, .. } => {
            scalar_pipeline(lhs)?;
            scalar_pipeline(rhs)
        }
    }
}

fn metrics(m: &MetricsExpr) -> Result<()> {
    match m {
        MetricsExpr::Leaf {
            pipeline: p,
            function,
        } => {
            pipeline(p)?;
            metrics_function(function)
        }
        MetricsExpr::Scalar(_) => Ok(()),
        MetricsExpr::Binary { lhs, rhs, .. } => {
            metrics(lhs)?;
            metrics(rhs)?;
            if is_compare(lhs) || is_compare(rhs) {
                return invalid("compare() cannot be used in metrics arithmetic");
            }
            Ok(())
        }
        MetricsExpr::Staged { expr, stages } => {
            metrics(expr)?;
            if is_compare(expr) {
                return invalid("compare() cannot be followed by topk(), bottomk() or a filter");
            }
            for stage in stages {
                if let SecondStage::TopK(k) | SecondStage::BottomK(k) = stage
                    && *k <= 0
                {
                    return invalid(format!(
                        "topk() and bottomk() need a positive count, got {k}"
                    ));
                }
            }
            Ok(())
        }
    }
}

fn is_compare(m: &MetricsExpr) -> bool {
    match m {
        MetricsExpr::Leaf { function, .. } => matches!(function, MetricsFunction::Compare { .. }),
        MetricsExpr::Staged { expr, .. } => is_compare(expr),
        _ => false,
    }
}

fn metrics_function(f: &MetricsFunction) -> Result<()> {
    let (by, max_by) = match f {
        MetricsFunction::Rate { by } | MetricsFunction::CountOverTime { by } => {
            (by, MAX_BY_ATTRIBUTES)
        }
        MetricsFunction::OverTime { op, attr, by } => {
            attr_ref(attr)?;
            let reserved = matches!(op, OverTimeOp::Avg | OverTimeOp::Histogram);
            (by, MAX_BY_ATTRIBUTES - usize::from(reserved))
        }
        MetricsFunction::QuantileOverTime {
            attr,
            quantiles,
            by,
        } => {
            attr_ref(attr)?;
            if let Some(q) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
                return invalid(format!("quantile {q} is outside [0, 1]"));
            }
            (by, MAX_BY_ATTRIBUTES - 1)
        }
        MetricsFunction::Compare {
            filter,
            top_n,
            bounds,
        } => {
            spanset(&SpansetExpr::Filter(filter.clone()))?;
            if let Some(n) = top_n
                && !(1..=MAX_COMPARE_TOP_N).contains(n)
            {
                return invalid(format!(
                    "compare() topN must be between 1 and {MAX_COMPARE_TOP_N}, got {n}"
                ));
            }
            if let Some((start, end)) = bounds
                && end <= start
            {
                return invalid("compare() end must be greater than start");
            }
            return Ok(());
        }
    };
    by.iter().try_for_each(attr_ref)?;
    if by.len() > max_by {
        return unsupported(format!(
            "this metrics function groups by at most {max_by} attributes, got {}",
            by.len()
        ));
    }
    Ok(())
}

fn attr_ref(a: &AttrRef) -> Result<()> {
    match a {
        AttrRef::Intrinsic(Intrinsic::Parent) => {
            unsupported("the `parent` intrinsic is not supported")
        }
        AttrRef::Attribute(attr) if attr.parent => unsupported(format!(
            "parent attributes such as {attr} are not supported"
        )),
        _ => Ok(()),
    }
}

fn references_span(e: &FieldExpr) -> bool {
    match e {
        FieldExpr::Static(_) => false,
        FieldExpr::Attr(_) => true,
        FieldExpr::Unary { expr, .. } => references_span(expr),
        FieldExpr::Binary { lhs, rhs, .. } => references_span(lhs) || references_span(rhs),
    }
}

/// Static types of field expressions; `Attribute` means "known only at run time".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Nil,
    Int,
    Float,
    String,
    Bool,
    Duration,
    Status,
    Kind,
    Attribute,
}

impl Type {
    fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Duration)
    }

    fn of_static(s: &Static) -> Type {
        match s {
            Static::Nil => Type::Nil,
            Static::Int(_) => Type::Int,
            Static::Float(_) => Type::Float,
            Static::String(_) => Type::String,
            Static::Bool(_) => Type::Bool,
            Static::Duration(_) => Type::Duration,
            Static::Status(_) => Type::Status,
            Static::Kind(_) => Type::Kind,
        }
    }

    fn of_intrinsic(i: Intrinsic) -> Type {
        match i {
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => {
                Type::Duration
            }
            Intrinsic::Name
            | Intrinsic::StatusMessage
            | Intrinsic::SpanId
            | Intrinsic::ParentId
            | Intrinsic::TraceRootName
            | Intrinsic::TraceRootService
            | Intrinsic::TraceId
            | Intrinsic::EventName
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId => Type::String,
            Intrinsic::Status => Type::Status,
            Intrinsic::Kind => Type::Kind,
            Intrinsic::ChildCount
            | Intrinsic::NestedSetLeft
            | Intrinsic::NestedSetRight
            | Intrinsic::NestedSetParent => Type::Int,
            Intrinsic::InstrumentationName
            | Intrinsic::InstrumentationVersion
            | Intrinsic::Parent => Type::Attribute,
        }
    }

    /// Tempo's compatibility rule: unknown, equal, both numeric, or either nil.
    fn compatible(self, other: Type) -> bool {
        self == Type::Attribute
            || other == Type::Attribute
            || self == other
            || (self.is_numeric() && other.is_numeric())
            || self == Type::Nil
            || other == Type::Nil
    }

    fn allows(self, op: BinaryOp) -> bool {
        use BinaryOp as B;
        match self {
            Type::Attribute => true,
            Type::Bool => matches!(op, B::And | B::Or | B::Eq | B::Neq),
            Type::Int | Type::Float | Type::Duration => op.is_arithmetic() || op.is_comparison(),
            Type::String => op.is_comparison() || matches!(op, B::Regex | B::NotRegex),
            Type::Nil | Type::Status | Type::Kind => matches!(op, B::Eq | B::Neq),
        }
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Type::Nil => "nil",
            Type::Int => "an int",
            Type::Float => "a float",
            Type::String => "a string",
            Type::Bool => "a boolean",
            Type::Duration => "a duration",
            Type::Status => "a status",
            Type::Kind => "a kind",
            Type::Attribute => "an attribute",
        })
    }
}

/// Checks a field expression and returns its static type.
fn field(e: &FieldExpr) -> Result<Type> {
    match e {
        FieldExpr::Static(s) => Ok(Type::of_static(s)),
        FieldExpr::Attr(a) => {
            attr_ref(a)?;
            Ok(match a {
                AttrRef::Intrinsic(i) => Type::of_intrinsic(*i),
                AttrRef::Attribute(_) => Type::Attribute,
            })
        }
        FieldExpr::Unary { op, expr } => {
            let ty = field(expr)?;
            match op {
                UnaryOp::Neg if ty.is_numeric() || ty == Type::Attribute => Ok(ty),
                UnaryOp::Neg => invalid(format!("unary '-' needs a number, but {expr} is {ty}")),
                UnaryOp::Not if matches!(ty, Type::Bool | Type::Attribute) => Ok(Type::Bool),
                UnaryOp::Not => invalid(format!("'!' needs a boolean, but {expr} is {ty}")),
            }
        }
        FieldExpr::Binary { op, lhs, rhs } => binary(*op, lhs, rhs),
    }
}

fn binary(op: BinaryOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Result<Type> {
    let (lt, rt) = (field(lhs)?, field(rhs)?);
    if !lt.compatible(rt) {
        return invalid(format!("{lhs} {op} {rhs}: cannot combine {lt} with {rt}"));
    }
    let governing = [lt, rt]
        .into_iter()
        .find(|t| !matches!(t, Type::Attribute | Type::Nil))
        .unwrap_or(if lt == Type::Nil || rt == Type::Nil {
            Type::Nil
        } else {
            Type::Attribute
        });
    if !governing.allows(op) || (lt == Type::Nil || rt == Type::Nil) && !Type::Nil.allows(op) {
        return invalid(format!(
            "{lhs} {op} {rhs}: '{op}' is not defined for {governing}"
        ));
    }
    if op == BinaryOp::Eq
        && (is_never_nil(lhs) && rt == Type::Nil || is_never_nil(rhs) && lt == Type::Nil)
    {
        return invalid(format!(
            "{lhs} {op} {rhs}: this value always exists, so it can never be nil; use != nil to test for presence"
        ));
    }
    if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
        let FieldExpr::Static(Static::String(pattern)) = rhs else {
            return invalid(format!(
                "{lhs} {op} {rhs}: the right side of '{op}' must be a string literal"
            ));
        };
        // A literal-shaped pattern is valid as it stands; compiling it would cost more
        // than the rest of the check.
        if super::LiteralRegex::of(pattern).is_none()
            && let Err(e) = regex::Regex::new(pattern)
        {
            return invalid(format!("invalid regular expression {pattern:?}: {e}"));
        }
    }
    Ok(if op.is_arithmetic() {
        if lt == Type::Attribute { rt } else { lt }
    } else {
        Type::Bool
    })
}

/// Intrinsics and `resource.service.name` always have a value, so `= nil` on them is a mistake.
fn is_never_nil(e: &FieldExpr) -> bool {
    match e {
        FieldExpr::Attr(AttrRef::Intrinsic(_)) => true,
        FieldExpr::Attr(AttrRef::Attribute(a)) => {
            !a.parent && a.scope == AttrScope::Resource && a.name == "service.name"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CheckError, check};

    fn verdict(query: &str) -> &'static str {
        match check(query) {
            Ok(_) => "ok",
            Err(CheckError::Parse(_)) => "parse",
            Err(e) if e.is_unsupported() => "unsupported",
            Err(_) => "invalid",
        }
    }

    #[test]
    fn filters_must_be_boolean() {
        assert_eq!(verdict("{ .a }"), "ok");
        assert_eq!(verdict("{ 1 + 1 }"), "invalid");
        assert_eq!(verdict("{ status }"), "invalid");
    }

    #[test]
    fn operators_are_checked_per_type() {
        assert_eq!(verdict("{ status > ok }"), "invalid");
        assert_eq!(verdict("{ .http.status >= \"200\" }"), "ok");
        assert_eq!(verdict("{ 1 =~ 2 }"), "invalid");
        assert_eq!(verdict("{ 1 < 1h }"), "ok");
    }

    #[test]
    fn regexes_must_compile_and_be_literals() {
        assert_eq!(verdict("{ .a =~ \"[\" }"), "invalid");
        assert_eq!(verdict("{ .a =~ .b }"), "invalid");
        assert_eq!(verdict("{ .a =~ \"a.*\" }"), "ok");
    }

    #[test]
    fn nil_checks_on_intrinsics_are_only_allowed_as_exists() {
        assert_eq!(verdict("{ name != nil }"), "ok");
        assert_eq!(verdict("{ span:status = nil }"), "invalid");
        assert_eq!(verdict("{ resource.service.name = nil }"), "invalid");
    }

    #[test]
    fn parent_is_unsupported_even_inside_expressions() {
        assert_eq!(verdict("{ parent }"), "unsupported");
        assert_eq!(verdict("{ 1 % parent = 1 }"), "unsupported");
        assert_eq!(verdict("{ } | max(parent.a) = 1"), "unsupported");
    }

    #[test]
    fn metrics_rules() {
        assert_eq!(verdict("{ } | rate() | topk(0)"), "invalid");
        assert_eq!(
            verdict("{ } | quantile_over_time(duration, 1.5)"),
            "invalid"
        );
        assert_eq!(verdict("{ } | compare({ status = error }) > 1"), "invalid");
        assert_eq!(
            verdict("{ } | rate() by (.a, .b, .c, .d, .e, .f)"),
            "unsupported"
        );
    }
}
