//! Searches the `traces` table alone can decide. A trace's rows there carry, per service, how
//! many of its spans it has and how many of those have status error. So when a search's only
//! stage is a filter on the resource's service and the error status, optionally followed by
//! `count() op n`, which traces match is known without reading a span: `{ }`,
//! `{ resource.service.name = "payment" }`, `{ status = error }`,
//! `{ resource.service.name = "checkout" && status = error } | count() > 2`. Their spansets
//! and matched spans are still read from `spans`, for the chosen traces only.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    binary_expr,
};
use datafusion::prelude::{col, lit};

use crate::schema::otlp::{SERVICE_NAME_KEY, UNKNOWN_SERVICE};
use crate::schema::traces;
use crate::traceql::Query;
use crate::traceql::ast::{
    AggregateOp, AttrRef, AttrScope, BinaryOp, Body, CmpOp, FieldExpr, Intrinsic, ScalarExpr,
    SpansetExpr, Stage, Static, Status,
};

use super::filters::cmp_to_binary;

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

/// `service_count(services, service, field)`: of a `traces` row's `services` list, the count
/// `field` (`span_count` or `error_count`) of the element naming `service`; 0 when none does.
static SERVICE_COUNT: LazyLock<Arc<ScalarUDF>> =
    LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(ServiceCount::new())));

#[derive(Debug, PartialEq, Eq, Hash)]
struct ServiceCount {
    signature: Signature,
}

impl ServiceCount {
    fn new() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

/// A string literal argument of `service_count`.
fn literal_text<'a>(value: &'a ColumnarValue, what: &str) -> datafusion::common::Result<&'a str> {
    match value {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(text)))
        | ColumnarValue::Scalar(ScalarValue::Utf8View(Some(text)))
        | ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(text))) => Ok(text),
        _ => exec_err!("service_count: the {what} must be a string literal"),
    }
}

impl ScalarUDFImpl for ServiceCount {
    fn name(&self) -> &str {
        "service_count"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let service = literal_text(&args.args[1], "service")?;
        let field = literal_text(&args.args[2], "count's name")?;
        let lists = args.args[0].to_array(args.number_rows)?;
        let Some(lists) = lists.as_list_opt::<i32>() else {
            return exec_err!(
                "service_count: services must be a list, not {}",
                lists.data_type()
            );
        };
        let Some(items) = lists.values().as_struct_opt() else {
            return exec_err!("service_count: services must hold structs");
        };
        let names = items.column_by_name(traces::service::SERVICE_NAME);
        let counts = items.column_by_name(field);
        let (Some(names), Some(counts)) = (names, counts) else {
            return exec_err!("service_count: the services lack a name or `{field}`");
        };
        let names = arrow::compute::cast(names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let counts = arrow::compute::cast(counts, &DataType::Int64)?;
        let counts = counts.as_primitive::<Int64Type>();
        let offsets = lists.value_offsets();
        let out: Int64Array = (0..lists.len())
            .map(|row| {
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                let found = (start..end)
                    .find(|&i| names.is_valid(i) && names.value(i) == service)
                    .map_or(0, |i| counts.value(i));
                Some(if lists.is_valid(row) { found } else { 0 })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

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

    /// How many spans of one `traces` row the search counts: of the service named, or of
    /// every service; with status error, or all. Read from the row's `services` list without
    /// unnesting it.
    pub fn row_count(&self) -> Expr {
        let column = if self.errors {
            traces::service::ERROR_COUNT
        } else {
            traces::service::SPAN_COUNT
        };
        match &self.service {
            Some(service) => SERVICE_COUNT.call(vec![
                col(traces::SERVICES),
                lit(service.as_str()),
                lit(column),
            ]),
            None if self.errors => col(traces::ERROR_COUNT),
            None => col(traces::SPAN_COUNT),
        }
    }

    /// Whether a trace whose rows' [`row_count`](Self::row_count)s sum to `counted` matches:
    /// at least one counted span, and `count() op n`.
    pub fn keeps(&self, counted: Expr) -> Expr {
        let mut keep = counted.clone().gt(lit(0i64));
        if let Some((op, n)) = self.count {
            keep = keep.and(binary_expr(counted, cmp_to_binary(op), lit(n)));
        }
        keep
    }
}
