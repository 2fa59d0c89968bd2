//! What a search shows on its matched spans: the attributes a query references or
//! `select()`s, and how each is read from `spans`.

use super::*;

/// Adds every attribute `field` reads to `out`, once.
pub(super) fn collect_field_attrs(field: &FieldExpr, out: &mut Vec<AttrRef>) {
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

pub(super) fn collect_spanset_attrs(expr: &SpansetExpr, out: &mut Vec<AttrRef>) {
    match expr {
        SpansetExpr::Filter(f) => collect_field_attrs(f, out),
        SpansetExpr::Binary { lhs, rhs, .. } => {
            collect_spanset_attrs(lhs, out);
            collect_spanset_attrs(rhs, out);
        }
        SpansetExpr::Pipeline(p) => collect_pipeline_attrs(p, out),
    }
}

pub(super) fn collect_pipeline_attrs(pipeline: &Pipeline, out: &mut Vec<AttrRef>) {
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
pub(super) fn typed_columns(value: Value) -> [Expr; 4] {
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
