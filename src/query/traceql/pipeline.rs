//! Pipeline stages that work per spanset: `by()` groups and scalar filters over aggregates.

use super::*;

impl Scope<'_> {
    /// `by(expr)`: adds the group value and key columns to every span.
    pub(super) fn group_by(&self, expr: &FieldExpr, input: DataFrame) -> Result<DataFrame> {
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

    pub(super) fn scalar_filter(
        &self,
        filter: &ScalarFilter,
        input: DataFrame,
    ) -> Result<DataFrame> {
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
