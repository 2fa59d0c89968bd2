//! Cheap tests first: the order of a filter's conjunctions by their cost per row.
//!
//! DataFusion evaluates `a AND b` by evaluating `a`, and when few rows pass it, `b` only on
//! those rows. A filter whose first test is a string comparison and whose second a boolean
//! column therefore compares every row's string, and when the string test passes a fifth of
//! the rows, copies those rows to test the boolean. Tested the other way round, the boolean
//! passes a handful of rows and only their strings are compared. The optimizer's own
//! rewrites leave conjunctions in no particular order, so this rule orders them last.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, LikeExpr};
use datafusion::physical_expr::utils::{conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

/// Orders the conjunctions of every filter by [`cost`], keeping the written order among
/// tests of one cost. The answer is the same in any order: a filter has no side effects, and
/// NULL and false both drop a row.
#[derive(Debug, Default)]
pub struct CheapTestsFirst;

impl PhysicalOptimizerRule for CheapTestsFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = filter.input().schema();
            let tests = split_conjunction(filter.predicate());
            let costs: Vec<u8> = tests.iter().map(|t| cost(t, &schema)).collect();
            if costs.is_sorted() {
                return Ok(Transformed::no(node));
            }
            let mut order: Vec<usize> = (0..tests.len()).collect();
            order.sort_by_key(|&i| costs[i]);
            let predicate = conjunction(order.into_iter().map(|i| Arc::clone(tests[i])));
            let ordered = FilterExecBuilder::from(filter)
                .with_predicate(predicate)
                .build()?;
            Ok(Transformed::yes(Arc::new(ordered)))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "cheap_tests_first"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A test's cost per row: 2 when it runs a regex, 1 when it reads text (comparisons, `LIKE`
/// and string functions), 0 otherwise (numbers, booleans, timestamps).
fn cost(test: &Arc<dyn PhysicalExpr>, schema: &Schema) -> u8 {
    let mut cost = 0;
    // The closure never fails.
    let _ = test.apply(|e| {
        let node: &dyn PhysicalExpr = e.as_ref();
        if node
            .downcast_ref::<BinaryExpr>()
            .is_some_and(|b| is_regex(b.op()))
        {
            cost = 2;
            return Ok(TreeNodeRecursion::Stop);
        }
        let reads_text = node.downcast_ref::<LikeExpr>().is_some()
            || node.downcast_ref::<Column>().is_some_and(|c| {
                schema
                    .fields()
                    .get(c.index())
                    .is_some_and(|f| is_text(f.data_type()))
            });
        if reads_text {
            cost = 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    cost
}

fn is_regex(op: &Operator) -> bool {
    matches!(
        op,
        Operator::RegexMatch
            | Operator::RegexIMatch
            | Operator::RegexNotMatch
            | Operator::RegexNotIMatch
    )
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::physical_plan::empty::EmptyExec;

    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("flag", DataType::Boolean, true),
            Field::new("code", DataType::Int64, true),
        ]))
    }

    fn ordered(tests: Vec<Arc<dyn PhysicalExpr>>) -> String {
        let input = Arc::new(EmptyExec::new(schema()));
        let filter = Arc::new(FilterExec::try_new(conjunction(tests), input).unwrap());
        let plan = CheapTestsFirst
            .optimize(filter, &ConfigOptions::default())
            .unwrap();
        let filter = plan.downcast_ref::<FilterExec>().unwrap();
        filter.predicate().to_string()
    }

    fn compare(
        column: &str,
        op: Operator,
        value: datafusion::common::ScalarValue,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(
            col(column, &schema()).unwrap(),
            op,
            lit(value),
        ))
    }

    #[test]
    fn numbers_and_booleans_come_before_text_and_regexes() {
        let regex = compare("name", Operator::RegexMatch, "^G.*$".into());
        let text = compare("name", Operator::Eq, "GET".into());
        let flag = col("flag", &schema()).unwrap();
        let code = compare("code", Operator::Gt, 1i64.into());
        assert_eq!(
            ordered(vec![regex, text, flag, code]),
            "flag@1 AND code@2 > 1 AND name@0 = GET AND name@0 ~ ^G.*$"
        );
    }

    #[test]
    fn tests_of_one_cost_keep_their_order() {
        let code = compare("code", Operator::Gt, 1i64.into());
        let flag = col("flag", &schema()).unwrap();
        assert_eq!(ordered(vec![code, flag]), "code@2 > 1 AND flag@1");
    }
}
