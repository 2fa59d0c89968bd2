//! What scan filters say about trace ids, time and names, for pruning blocks and live rows.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use crate::schema::{TableKind, TraceId};
use crate::storage::BlockMeta;

/// Trace ids, a time range and names implied by a scan's filters. `None` means unbounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanBounds {
    pub trace_ids: Option<Vec<TraceId>>,
    /// Inclusive lower bound of `start_time`, Unix nanoseconds.
    pub start_ns: Option<i64>,
    /// Exclusive upper bound of `start_time`, Unix nanoseconds.
    pub end_ns: Option<i64>,
    /// Values the table's name column (see [`TableKind::name_column`]) must take.
    pub names: Option<Vec<String>>,
}

/// The columns a table's bounds are read from.
#[derive(Debug, Clone, Copy)]
struct Columns {
    trace_id: Option<&'static str>,
    time: &'static str,
    name: Option<&'static str>,
}

impl ScanBounds {
    /// Reads the bounds out of a conjunction of filters; filters it does not understand only
    /// make the bounds looser.
    pub fn from_filters(filters: &[Expr], table: TableKind) -> Self {
        let columns = Columns {
            trace_id: table.trace_id_column(),
            time: table.time_column(),
            name: table.name_column(),
        };
        let mut bounds = ScanBounds::default();
        for filter in filters {
            bounds.add(filter, columns);
        }
        bounds
    }

    fn add(&mut self, filter: &Expr, columns: Columns) {
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.add(left, columns);
                self.add(right, columns);
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
                if Some(column.name.as_str()) == columns.trace_id && op == Operator::Eq {
                    if let Some(id) = trace_id_of(value) {
                        self.narrow_ids(vec![id]);
                    }
                } else if Some(column.name.as_str()) == columns.name && op == Operator::Eq {
                    if let Some(name) = string_of(value) {
                        self.narrow_names(vec![name]);
                    }
                } else if column.name == columns.time
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
                let Expr::Column(c) = expr.as_ref() else {
                    return;
                };
                if Some(c.name.as_str()) == columns.name {
                    let names: Option<Vec<String>> = list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => string_of(v),
                            _ => None,
                        })
                        .collect();
                    if let Some(names) = names {
                        self.narrow_names(names);
                    }
                } else if Some(c.name.as_str()) == columns.trace_id {
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

    fn narrow_names(&mut self, names: Vec<String>) {
        self.names = Some(match self.names.take() {
            None => names,
            Some(existing) => existing.into_iter().filter(|n| names.contains(n)).collect(),
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
            && self
                .names
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| block.may_contain_name(n)))
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

fn string_of(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
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
        let bounds = ScanBounds::from_filters(&filters, TableKind::Spans);
        assert_eq!(
            bounds,
            ScanBounds {
                trace_ids: Some(vec![id]),
                start_ns: Some(100),
                end_ns: Some(200),
                names: None,
            }
        );
    }

    #[test]
    fn metric_names_are_read_from_equality_and_in_lists() {
        let filters = vec![
            col("metric_name").in_list(vec![lit("a"), lit("b")], false),
            col("metric_name").eq(lit("b")),
        ];
        let bounds = ScanBounds::from_filters(&filters, TableKind::Metrics);
        assert_eq!(bounds.names, Some(vec!["b".to_string()]));
        assert_eq!(bounds.trace_ids, None);
    }
}
