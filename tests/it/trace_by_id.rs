//! Trace by id on a multi-block dataset opens the one block that may hold the trace and reads
//! a couple of its pages, not the table.

use std::sync::Arc;

use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::{ExecutionPlan, collect};
use spanlake::generator::Generator;
use spanlake::schema::otlp::spans_from_request;

/// Sums a pruning metric over the plan: (row groups that passed, row groups pruned).
fn pruning(plan: &Arc<dyn ExecutionPlan>, name: &str) -> (usize, usize) {
    let mut total = (0, 0);
    if let Some(metrics) = plan.metrics() {
        for metric in metrics.iter() {
            if let MetricValue::PruningMetrics {
                name: n,
                pruning_metrics,
            } = metric.value()
                && n.as_ref() == name
            {
                total.0 += pruning_metrics.matched();
                total.1 += pruning_metrics.pruned();
            }
        }
    }
    for child in plan.children() {
        let (m, p) = pruning(child, name);
        total.0 += m;
        total.1 += p;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_by_id_opens_one_block_and_reads_at_most_two_pages() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::test_config(dir.path());
    let opened = spanlake::server::open(&config, false).await.unwrap();
    let mut generator = Generator::new(2024);
    let mut wanted = None;
    let mut wanted_spans = 0;
    for block in 0..4 {
        for n in 0..3_000 {
            let spans =
                spans_from_request(&generator.trace_at(block * 1_000_000_000_000 + n * 1_000_000))
                    .unwrap();
            if block == 2 && n == 1_234 {
                wanted = Some(spans[0].trace_id);
                wanted_spans = spans.len();
            }
            opened.ingester.push("single-tenant", spans).await.unwrap();
        }
        opened.ingester.flush(true).await.unwrap();
    }
    let wanted = hex::encode(wanted.unwrap());

    let ctx = opened.engine.session("single-tenant").unwrap();
    let frame = ctx
        .sql(&format!(
            "SELECT span_id, name FROM spans WHERE trace_id = to_trace_id('{wanted}')"
        ))
        .await
        .unwrap();
    let plan = frame.create_physical_plan().await.unwrap();
    let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, wanted_spans);

    let (after_stats, pruned_by_stats) = pruning(&plan, "row_groups_pruned_statistics");
    let (rows_read, rows_skipped) = pruning(&plan, "page_index_rows_pruned");
    let blocks = opened
        .catalog
        .blocks("single-tenant", spanlake::schema::Signal::Traces);
    assert_eq!(blocks.len(), 4);
    let rows_per_block = blocks[0].rows as usize;
    let groups_per_block = rows_per_block.div_ceil(spanlake::storage::ROW_GROUP_ROWS);
    assert!(
        rows_per_block > 2 * spanlake::storage::PAGE_ROWS,
        "{rows_per_block} rows per block"
    );
    assert!(
        after_stats + pruned_by_stats <= groups_per_block,
        "the blocks' trace-id bloom filters leave one block to open; {} row groups were considered",
        after_stats + pruned_by_stats
    );
    assert!(
        rows_read <= 2 * spanlake::storage::PAGE_ROWS,
        "the page index leaves at most two pages of the block: read {rows_read} rows, skipped {rows_skipped}"
    );
    assert!(rows_skipped > 0, "the page index skipped no page");
}
