//! Constant folding of field expressions, run on a validated pipeline before lowering.
//!
//! The parser folds constants only in scalar positions (see [`ast`](super::ast)); inside
//! `{ }`, `by()` and aggregates the tree is kept as written so that it prints back as
//! written. This pass folds there too, so that `{ duration > 1s + 500ms }` compares with one
//! literal and `{ 1 = 1 && name = "x" }` is just `{ name = "x" }`.
//!
//! Every fold gives exactly what [`lower`](super::lower) would compute for the unfolded
//! expression: int with int stays int (but `^` is float `pow`), every other numeric pair is
//! f64, ill-typed comparisons are false. Folds that could change a result are left to the
//! plan: division or remainder by zero, integer overflow, `nil`, regexes, and
//! `true && e` / `false || e` where `e` may be a non-boolean (a bare attribute is false, not
//! itself, as an operand of `&&`). This pass never evaluates anything that reads a span.

use super::ast::{
    Aggregate, BinaryOp, FieldExpr, Pipeline, ScalarExpr, ScalarFilter, SpansetExpr, Stage, Static,
    UnaryOp,
};

/// `pipeline` with every field expression folded.
pub fn pipeline(pipeline: &Pipeline) -> Pipeline {
    Pipeline {
        stages: pipeline.stages.iter().map(stage).collect(),
    }
}

fn stage(stage: &Stage) -> Stage {
    match stage {
        Stage::Spanset(s) => Stage::Spanset(spanset(s)),
        Stage::ScalarFilter(f) => Stage::ScalarFilter(ScalarFilter {
            op: f.op,
            lhs: scalar(&f.lhs),
            rhs: scalar(&f.rhs),
        }),
        Stage::GroupBy(e) => Stage::GroupBy(field(e)),
        Stage::Coalesce | Stage::Select(_) => stage.clone(),
    }
}

fn spanset(expr: &SpansetExpr) -> SpansetExpr {
    match expr {
        SpansetExpr::Filter(e) => SpansetExpr::Filter(field(e)),
        SpansetExpr::Binary { op, lhs, rhs } => SpansetExpr::Binary {
            op: *op,
            lhs: Box::new(spanset(lhs)),
            rhs: Box::new(spanset(rhs)),
        },
        SpansetExpr::Pipeline(p) => SpansetExpr::Pipeline(Box::new(pipeline(p))),
    }
}

fn scalar(expr: &ScalarExpr) -> ScalarExpr {
    match expr {
        ScalarExpr::Aggregate(a) => ScalarExpr::Aggregate(Aggregate {
            op: a.op,
            expr: a.expr.as_ref().map(field),
        }),
        ScalarExpr::Static(_) => expr.clone(),
        ScalarExpr::Binary { op, lhs, rhs } => ScalarExpr::Binary {
            op: *op,
            lhs: Box::new(scalar(lhs)),
            rhs: Box::new(scalar(rhs)),
        },
    }
}

/// `expr` with its constant subexpressions folded, bottom up.
pub fn field(expr: &FieldExpr) -> FieldExpr {
    match expr {
        FieldExpr::Static(_) | FieldExpr::Attr(_) => expr.clone(),
        FieldExpr::Unary { op, expr } => {
            let inner = field(expr);
            if let FieldExpr::Static(s) = &inner
                && let Some(folded) = unary(*op, s)
            {
                return FieldExpr::Static(folded);
            }
            FieldExpr::Unary {
                op: *op,
                expr: Box::new(inner),
            }
        }
        FieldExpr::Binary { op, lhs, rhs } => {
            let (lhs, rhs) = (field(lhs), field(rhs));
            match (&lhs, &rhs) {
                (FieldExpr::Static(a), FieldExpr::Static(b)) => {
                    if let Some(folded) = binary(*op, a, b) {
                        return FieldExpr::Static(folded);
                    }
                }
                (FieldExpr::Static(Static::Bool(b)), other)
                | (other, FieldExpr::Static(Static::Bool(b)))
                    if is_always_boolean(other) =>
                {
                    match (op, b) {
                        (BinaryOp::And, true) | (BinaryOp::Or, false) => return other.clone(),
                        (BinaryOp::And, false) | (BinaryOp::Or, true) => {
                            return FieldExpr::Static(Static::Bool(*b));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            FieldExpr::Binary {
                op: *op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            }
        }
    }
}

/// True when `expr` is a boolean (never nil) on every span: comparisons, `&&`/`||`, and `!`
/// of those. Regex matches are not: on a missing value they are nil.
fn is_always_boolean(expr: &FieldExpr) -> bool {
    match expr {
        FieldExpr::Static(s) => matches!(s, Static::Bool(_)),
        FieldExpr::Attr(_) => false,
        FieldExpr::Unary { op, expr } => *op == UnaryOp::Not && is_always_boolean(expr),
        FieldExpr::Binary { op, .. } => {
            op.is_comparison() || matches!(op, BinaryOp::And | BinaryOp::Or)
        }
    }
}

fn unary(op: UnaryOp, s: &Static) -> Option<Static> {
    Some(match (op, s) {
        (UnaryOp::Neg, Static::Int(i)) => Static::Int(i.checked_neg()?),
        (UnaryOp::Neg, Static::Float(f)) => Static::Float(-f),
        (UnaryOp::Neg, Static::Duration(d)) => Static::Duration(d.checked_neg()?),
        (UnaryOp::Not, Static::Bool(b)) => Static::Bool(!b),
        _ => return None,
    })
}

/// A number as the plan sees it: ints and durations are i64 nanoseconds, floats f64.
#[derive(Clone, Copy)]
enum Number {
    Integral(i64),
    Float(f64),
}

impl Number {
    fn of(s: &Static) -> Option<Self> {
        match s {
            Static::Int(i) | Static::Duration(i) => Some(Number::Integral(*i)),
            Static::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }

    fn f64(self) -> f64 {
        match self {
            Number::Integral(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

fn binary(op: BinaryOp, a: &Static, b: &Static) -> Option<Static> {
    if op.is_arithmetic() {
        return arithmetic(op, a, b);
    }
    if op.is_comparison() {
        return compare(op, a, b).map(Static::Bool);
    }
    match (op, a, b) {
        (BinaryOp::And, Static::Bool(x), Static::Bool(y)) => Some(Static::Bool(*x && *y)),
        (BinaryOp::Or, Static::Bool(x), Static::Bool(y)) => Some(Static::Bool(*x || *y)),
        // A non-boolean operand of `&&`/`||` makes it false.
        (BinaryOp::And | BinaryOp::Or, _, _) => Some(Static::Bool(false)),
        _ => None,
    }
}

fn arithmetic(op: BinaryOp, a: &Static, b: &Static) -> Option<Static> {
    // Only int with int stays integral; durations count as floats here, as in the plan.
    if let (Static::Int(x), Static::Int(y)) = (a, b)
        && op != BinaryOp::Pow
    {
        let (x, y) = (*x, *y);
        return Some(Static::Int(match op {
            BinaryOp::Add => x.checked_add(y)?,
            BinaryOp::Sub => x.checked_sub(y)?,
            BinaryOp::Mul => x.checked_mul(y)?,
            BinaryOp::Div => x.checked_div(y)?,
            BinaryOp::Mod => x.checked_rem(y)?,
            _ => return None,
        }));
    }
    let (x, y) = (Number::of(a)?.f64(), Number::of(b)?.f64());
    Some(Static::Float(match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div | BinaryOp::Mod if y == 0.0 => return None,
        BinaryOp::Div => x / y,
        BinaryOp::Mod => x % y,
        BinaryOp::Pow => x.powf(y),
        _ => return None,
    }))
}

fn compare(op: BinaryOp, a: &Static, b: &Static) -> Option<bool> {
    use std::cmp::Ordering;
    let holds = |ord: Option<Ordering>| {
        let Some(ord) = ord else {
            return false; // NaN
        };
        match op {
            BinaryOp::Eq => ord == Ordering::Equal,
            BinaryOp::Neq => ord != Ordering::Equal,
            BinaryOp::Lt => ord == Ordering::Less,
            BinaryOp::Lte => ord != Ordering::Greater,
            BinaryOp::Gt => ord == Ordering::Greater,
            BinaryOp::Gte => ord != Ordering::Less,
            _ => false,
        }
    };
    let equality = matches!(op, BinaryOp::Eq | BinaryOp::Neq);
    Some(match (a, b) {
        (Static::Nil, _) | (_, Static::Nil) => return None,
        (Static::String(x), Static::String(y)) => holds(Some(x.as_bytes().cmp(y.as_bytes()))),
        (Static::Bool(x), Static::Bool(y)) => equality && holds(Some(x.cmp(y))),
        (Static::Status(x), Static::Status(y)) => equality && (x == y) == (op == BinaryOp::Eq),
        (Static::Kind(x), Static::Kind(y)) => equality && (x == y) == (op == BinaryOp::Eq),
        _ => match (Number::of(a), Number::of(b)) {
            (Some(Number::Integral(x)), Some(Number::Integral(y))) => holds(Some(x.cmp(&y))),
            (Some(x), Some(y)) => holds(x.f64().partial_cmp(&y.f64())),
            _ => false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traceql::ast::{AttrRef, Body, Intrinsic};
    use crate::traceql::check;

    /// The only filter of `query`, folded.
    fn folded(query: &str) -> FieldExpr {
        let query = check(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let Body::Pipeline(p) = &query.body else {
            panic!("{query} is not a pipeline");
        };
        match &pipeline(p).stages[..] {
            [Stage::Spanset(SpansetExpr::Filter(e))] => e.clone(),
            other => panic!("{query}: {other:?}"),
        }
    }

    /// The filter of `query` as written.
    fn written(query: &str) -> FieldExpr {
        let query = check(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let Body::Pipeline(p) = query.body else {
            panic!("not a pipeline");
        };
        match p.stages.into_iter().next() {
            Some(Stage::Spanset(SpansetExpr::Filter(e))) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duration_sums_fold_to_one_float_literal() {
        assert_eq!(
            folded("{ duration > 1s + 500ms }"),
            FieldExpr::Binary {
                op: BinaryOp::Gt,
                lhs: Box::new(FieldExpr::Attr(AttrRef::Intrinsic(Intrinsic::Duration))),
                rhs: Box::new(FieldExpr::Static(Static::Float(1.5e9))),
            }
        );
    }

    #[test]
    fn true_conjuncts_disappear() {
        assert_eq!(
            folded(r#"{ 1 = 1 && name = "x" }"#),
            written(r#"{ name = "x" }"#)
        );
        assert_eq!(
            folded(r#"{ name = "x" || 2 > 3 }"#),
            written(r#"{ name = "x" }"#)
        );
    }

    #[test]
    fn false_conjuncts_and_true_disjuncts_decide_the_filter() {
        assert_eq!(
            folded(r#"{ 1 = 2 && name = "x" }"#),
            FieldExpr::Static(Static::Bool(false))
        );
        assert_eq!(
            folded(r#"{ name = "x" || "a" < "b" }"#),
            FieldExpr::Static(Static::Bool(true))
        );
    }

    /// `{ .a = value }`.
    fn a_equals(value: Static) -> FieldExpr {
        FieldExpr::Binary {
            op: BinaryOp::Eq,
            lhs: Box::new(written("{ .a }")),
            rhs: Box::new(FieldExpr::Static(value)),
        }
    }

    #[test]
    fn int_arithmetic_stays_int_and_mixed_is_float() {
        assert_eq!(folded("{ .a = 7 / 2 }"), a_equals(Static::Int(3)));
        assert_eq!(folded("{ .a = -7 % 2 }"), a_equals(Static::Int(-1)));
        assert_eq!(folded("{ .a = 1 + 0.5 }"), a_equals(Static::Float(1.5)));
        // `^` is float pow even between ints, as in the plan.
        assert_eq!(folded("{ .a = 2 ^ 3 }"), a_equals(Static::Float(8.0)));
    }

    #[test]
    fn folds_that_could_change_a_result_are_left_to_the_plan() {
        for query in [
            "{ .a = 1 / 0 }",
            "{ .a = 9223372036854775807 + 1 }",
            "{ true && .flag }",
            r#"{ true && .a =~ "x" }"#,
        ] {
            assert_eq!(folded(query), written(query), "{query}");
        }
    }

    #[test]
    fn literal_comparisons_follow_the_runtime_rules() {
        let bool = |b| FieldExpr::Static(Static::Bool(b));
        assert_eq!(folded("{ 1ns = 1 }"), bool(true));
        assert_eq!(folded("{ 2m + 2m = 4m }"), bool(true));
        assert_eq!(folded(r#"{ "a" < "b" }"#), bool(true));
        assert_eq!(folded("{ error != ok }"), bool(true));
        assert_eq!(folded("{ true = false }"), bool(false));
    }
}
