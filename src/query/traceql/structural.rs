//! Spanset operators: `&&` and `||` between spansets as semi-joins and unions on trace id,
//! and the structural operators as joins on trace id with nested-set predicates.

use super::*;

impl Scope<'_> {
    pub(super) fn spanset(&self, expr: &SpansetExpr, input: DataFrame) -> Result<DataFrame> {
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

    pub(super) fn spanset_op(
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
}

/// `frame` restricted to traces that also appear in `other`.
pub(super) fn semi_on_trace(frame: DataFrame, other: DataFrame) -> Result<DataFrame> {
    let ids = other.select(vec![col(spans::TRACE_ID)])?.alias("__ids")?;
    Ok(frame.alias("__f")?.join_on(
        ids,
        JoinType::LeftSemi,
        [qcol("__f", spans::TRACE_ID).eq(qcol("__ids", spans::TRACE_ID))],
    )?)
}

/// The distinct (trace_id, span_id) keys of two frames.
pub(super) fn union_keys(a: DataFrame, b: DataFrame) -> Result<DataFrame> {
    let keys = || vec![col(spans::TRACE_ID), col(spans::SPAN_ID)];
    Ok(a.select(keys())?.union_distinct(b.select(keys())?)?)
}

/// The rows of `input` whose (trace_id, span_id) is in `keys`.
pub(super) fn restrict_to_keys(input: DataFrame, keys: DataFrame) -> Result<DataFrame> {
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
pub(super) enum Relation {
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

pub(super) fn relation(op: SpansetOp) -> Relation {
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
pub(super) fn relation_predicate(rel: Relation, l: &str, r: &str) -> Expr {
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
pub(super) fn structural(
    r: DataFrame,
    l: DataFrame,
    rel: Relation,
    join: JoinType,
) -> Result<DataFrame> {
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
pub(super) fn structural_rev(l: DataFrame, r: DataFrame, rel: Relation) -> Result<DataFrame> {
    Ok(l.alias("__l")?.join_on(
        r.alias("__r")?,
        JoinType::LeftSemi,
        [
            qcol("__r", spans::TRACE_ID).eq(qcol("__l", spans::TRACE_ID)),
            relation_predicate(rel, "__l", "__r"),
        ],
    )?)
}
