//! Searches the `traces` table alone can decide. A trace's rows there carry, per service, how
//! many of its spans it has and how many of those have status error. So when a search's only
//! stage is a filter on the resource's service and the error status, optionally followed by
//! `count() op n`, which traces match is known without reading a span: `{ }`,
//! `{ resource.service.name = "payment" }`, `{ status = error }`,
//! `{ resource.service.name = "checkout" && status = error } | count() > 2`. Their spansets
//! and matched spans are still read from `spans`, for the chosen traces only.

use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::binary_expr;
use datafusion::prelude::{col, lit};

use crate::schema::otlp::{SERVICE_NAME_KEY, UNKNOWN_SERVICE};
use crate::schema::traces;
use crate::traceql::Query;
use crate::traceql::ast::{
    AggregateOp, AttrRef, AttrScope, BinaryOp, Body, CmpOp, FieldExpr, Intrinsic, ScalarExpr,
    SpansetExpr, Stage, Static, Status,
};

use super::filters::cmp_to_binary;
use crate::query::Result;

/// The spans of a trace a trace-level search counts, and what the count must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanCount {
    /// Only the spans of this service (`resource.service.name`), or those of every service.
    service: Option<String>,
    /// Only the spans with status error.
    errors: bool,
    /// `count() op n` after the filter, if the search has one.
    count: Option<(CmpOp, i64)>,
}

/// The per-trace count column.
const COUNTED: &str = "__counted";
/// The unnested `services` item.
const ITEM: &str = "__service_item";

impl SpanCount {
    /// The count `query` decides by, if the `traces` table can answer it.
    pub fn of(query: &Query) -> Option<Self> {
        let Body::Pipeline(pipeline) = &query.body else {
            return None;
        };
        if !query.hints.is_empty() {
            return None;
        }
        let (filter, rest) = pipeline.stages.split_first()?;
        let Stage::Spanset(SpansetExpr::Filter(condition)) = filter else {
            return None;
        };
        let mut counted = SpanCount {
            service: None,
            errors: false,
            count: None,
        };
        counted.narrow(condition)?;
        match rest {
            [] => {}
            [Stage::ScalarFilter(f)] => {
                let ScalarExpr::Aggregate(aggregate) = &f.lhs else {
                    return None;
                };
                let ScalarExpr::Static(Static::Int(n)) = &f.rhs else {
                    return None;
                };
                if aggregate.op != AggregateOp::Count {
                    return None;
                }
                counted.count = Some((f.op, *n));
            }
            _ => return None,
        }
        Some(counted)
    }

    /// Takes the conjunct `condition` into the count, or `None` if it is not a condition on
    /// the service or the error status.
    fn narrow(&mut self, condition: &FieldExpr) -> Option<()> {
        let FieldExpr::Binary { op, lhs, rhs } = condition else {
            return matches!(condition, FieldExpr::Static(Static::Bool(true))).then_some(());
        };
        if *op == BinaryOp::And {
            self.narrow(lhs)?;
            return self.narrow(rhs);
        }
        if *op != BinaryOp::Eq {
            return None;
        }
        let (attr, value) = match (lhs.as_ref(), rhs.as_ref()) {
            (FieldExpr::Attr(attr), FieldExpr::Static(value))
            | (FieldExpr::Static(value), FieldExpr::Attr(attr)) => (attr, value),
            _ => return None,
        };
        match (attr, value) {
            (AttrRef::Intrinsic(Intrinsic::Status), Static::Status(Status::Error)) => {
                self.errors = true;
                Some(())
            }
            // Spans without a service name hold `unknown_service` in the column the counts
            // come from, so that name alone cannot be told from the attribute.
            (AttrRef::Attribute(a), Static::String(name))
                if !a.parent
                    && a.scope == AttrScope::Resource
                    && a.name == SERVICE_NAME_KEY
                    && name != UNKNOWN_SERVICE
                    && self.service.is_none() =>
            {
                self.service = Some(name.clone());
                Some(())
            }
            _ => None,
        }
    }

    /// The trace ids (column `traces::TRACE_ID`) among `rows`, a frame with the columns of
    /// `traces`, whose counted spans satisfy the count: at least one, and `count() op n`.
    pub fn matched(&self, rows: DataFrame) -> Result<DataFrame> {
        let counted = match &self.service {
            Some(service) => {
                let item = |name: &str| get_field(col(ITEM), name);
                let column = if self.errors {
                    traces::service::ERROR_COUNT
                } else {
                    traces::service::SPAN_COUNT
                };
                rows.select(vec![
                    col(traces::TRACE_ID),
                    col(traces::SERVICES).alias(ITEM),
                ])?
                .unnest_columns(&[ITEM])?
                .filter(item(traces::service::SERVICE_NAME).eq(lit(service.as_str())))?
                .select(vec![col(traces::TRACE_ID), item(column).alias(COUNTED)])?
            }
            None => {
                let column = if self.errors {
                    traces::ERROR_COUNT
                } else {
                    traces::SPAN_COUNT
                };
                rows.select(vec![col(traces::TRACE_ID), col(column).alias(COUNTED)])?
            }
        };
        let mut keep = col(COUNTED).gt(lit(0i64));
        if let Some((op, n)) = self.count {
            keep = keep.and(binary_expr(col(COUNTED), cmp_to_binary(op), lit(n)));
        }
        Ok(counted
            .aggregate(
                vec![col(traces::TRACE_ID)],
                vec![sum(col(COUNTED)).alias(COUNTED)],
            )?
            .filter(keep)?
            .select(vec![col(traces::TRACE_ID)])?)
    }
}
