//! What scan filters say about trace ids and time, for pruning blocks and live rows.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::schema::TraceId;
use crate::storage::BlockMeta;

/// Trace ids and a start-time range implied by a scan's filters. `None` means unbounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanBounds {
    pub trace_ids: Option<Vec<TraceId>>,
    /// Inclusive lower bound of `start_time`, Unix nanoseconds.
    pub start_ns: Option<i64>,
    /// Exclusive upper bound of `start_time`, Unix nanoseconds.
    pub end_ns: Option<i64>,
}

impl ScanBounds {
    /// Reads the bounds out of a conjunction of filters; filters it does not understand only
    /// make the bounds looser.
    pub fn from_filters(filters: &[Expr], trace_id_column: &str, start_column: &str) -> Self {
        let mut bounds = ScanBounds::default();
        for filter in filters {
            bounds.add(filter, trace_id_column, start_column);
        }
        bounds
    }

    fn add(&mut self, filter: &Expr, trace_id_column: &str, start_column: &str) {
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.add(left, trace_id_column, start_column);
                self.add(right, trace_id_column, start_column);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                        Some(op) => (c, op, v),
                        None => return,
                    },
                    _ => return,
                };
                if column.name == trace_id_column && op == Operator::Eq {
                    if let Some(id) = trace_id_of(value) {
                        self.narrow_ids(vec![id]);
                    }
                } else if column.name == start_column
                    && let Some(ns) = nanos_of(value)
                {
                    match op {
                        Operator::Gt => self.raise_start(ns.saturating_add(1)),
                        Operator::GtEq => self.raise_start(ns),
                        Operator::Lt => self.lower_end(ns),
                        Operator::LtEq => self.lower_end(ns.saturating_add(1)),
                        Operator::Eq => {
                            self.raise_start(ns);
                            self.lower_end(ns.saturating_add(1));
                        }
                        _ => {}
                    }
                }
            }
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) => {
                if let Expr::Column(c) = expr.as_ref()
                    && c.name == trace_id_column
                {
                    let ids: Option<Vec<TraceId>> = list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => trace_id_of(v),
                            _ => None,
                        })
                        .collect();
                    if let Some(ids) = ids {
                        self.narrow_ids(ids);
                    }
                }
            }
            _ => {}
        }
    }

    fn narrow_ids(&mut self, ids: Vec<TraceId>) {
        self.trace_ids = Some(match self.trace_ids.take() {
            None => ids,
            Some(existing) => existing.into_iter().filter(|id| ids.contains(id)).collect(),
        });
    }

    fn raise_start(&mut self, ns: i64) {
        self.start_ns = Some(self.start_ns.map_or(ns, |s| s.max(ns)));
    }

    fn lower_end(&mut self, ns: i64) {
        self.end_ns = Some(self.end_ns.map_or(ns, |e| e.min(ns)));
    }

    /// False when the block's meta proves it holds no matching row.
    pub fn admits_block(&self, block: &BlockMeta) -> bool {
        block.overlaps(self.start_ns, self.end_ns)
            && self
                .trace_ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| block.may_contain_trace(id)))
    }
}

fn trace_id_of(value: &ScalarValue) -> Option<TraceId> {
    match value {
        ScalarValue::FixedSizeBinary(16, Some(bytes))
        | ScalarValue::Binary(Some(bytes))
        | ScalarValue::LargeBinary(Some(bytes))
        | ScalarValue::BinaryView(Some(bytes)) => bytes.as_slice().try_into().ok(),
        _ => None,
    }
}

fn nanos_of(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn trace_id_equality_and_time_range_are_read() {
        let id = [7u8; 16];
        let filters = vec![
            col("trace_id").eq(lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec())))),
            col("start_time").gt_eq(lit(ScalarValue::TimestampNanosecond(Some(100), None))),
            lit(ScalarValue::TimestampNanosecond(Some(200), None)).gt(col("start_time")),
        ];
        let bounds = ScanBounds::from_filters(&filters, "trace_id", "start_time");
        assert_eq!(
            bounds,
            ScanBounds {
                trace_ids: Some(vec![id]),
                start_ns: Some(100),
                end_ns: Some(200)
            }
        );
    }
}
