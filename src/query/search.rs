//! TraceQL search: a query in, the newest matching traces with their matched spans out.
//!
//! The query is checked by [`crate::traceql`] and lowered by [`super::traceql`]. A search runs
//! newest first in slices of its window (at most [`SLICE_NS`] each, at most [`MAX_SLICES`]),
//! so that a streaming client sees results as they are found and a search stops as soon as it
//! holds `limit` traces. In each slice, one plan picks the top traces by start time
//! ([`top_traces`], also what [`explain`] prints), and a small one reads the root names of
//! those traces alone ([`root_names`]); the query is then lowered again over the
//! spans of those traces alone, which gives their spansets and up to `spss` matched spans of
//! each. When the chosen traces are few, their spans are read once into memory ([`Held`]),
//! one plan gives the spansets with their matched spans, and the same spans give the
//! per-service span and error counts; otherwise three plans over the tables give the
//! spansets, the matched spans and (from the `traces` table) the counts. Nothing here
//! evaluates TraceQL by itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, max, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, JoinType, LogicalPlan, cast};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::prelude::{SessionContext, col, lit};

use super::traceql::{
    self as lower, GROUP_KEY, LoweredSearch, Lowerer, SPANSET_ATTRIBUTE_PREFIX, SpanCount,
    TRACE_SUMMARY_DURATION, TRACE_SUMMARY_ID, TRACE_SUMMARY_START,
};
use super::{QueryEngine, QueryError, Result};
use crate::ids;
use crate::schema::{AttrValue, Signal, TableKind, spans, traces};
use crate::time::TimeRange;
use crate::traceql::{self, Query};

/// Spans per spanset when the caller asks for 0, as the reference engine does.
pub const DEFAULT_SPSS: usize = 3;
/// Traces returned when the caller asks for 0.
pub const DEFAULT_LIMIT: usize = 20;
/// Windows are searched in slices of at most this many nanoseconds (six hours)...
pub const SLICE_NS: i64 = 6 * 3_600_000_000_000;
/// ...and in at most this many slices.
pub const MAX_SLICES: i64 = 8;

/// A search: a TraceQL query over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// TraceQL text.
    pub query: String,
    /// Traces overlapping this window are searched; [`TimeRange::ALL`] searches everything in
    /// one pass.
    pub range: TimeRange,
    /// Traces at most; 0 for [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// Matched spans shown per spanset; 0 for [`DEFAULT_SPSS`].
    pub spss: usize,
}

impl SearchRequest {
    /// The checked query: what a search refuses before any job runs.
    pub fn check(&self) -> Result<Query> {
        Ok(traceql::check(&self.query)?)
    }
}

/// How much a search looked at, and how far it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchMetrics {
    /// Blocks whose spans may fall in the window.
    pub total_blocks: u32,
    /// Bytes of those blocks' Parquet files.
    pub total_block_bytes: u64,
    /// Slices times tenants.
    pub total_jobs: u32,
    /// Of those, the ones finished.
    pub completed_jobs: u32,
}

/// The answer to a search: matching traces, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResponse {
    /// At most `limit` traces.
    pub traces: Vec<TraceResult>,
    /// What the search covered.
    pub metrics: SearchMetrics,
    /// Where its time went.
    pub timings: StageTimings,
}

/// Time spent per stage of a search, summed over its jobs, in the order the stages first ran:
/// `parse` (check the query), `plan` (logical and physical planning of every stage), then the
/// execution of each stage: `traces` (pick the top traces), `read` (read their spans, when
/// few enough to hold), `spansets` (their spansets, with their matched spans when held),
/// `spans` (their matched spans, when not held), `services` (their per-service counts),
/// `roots` (their root names, read beside the other stages).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimings {
    /// `(stage, time)`.
    pub stages: Vec<(&'static str, Duration)>,
}

impl StageTimings {
    /// Adds `time` to `stage`.
    pub fn add(&mut self, stage: &'static str, time: Duration) {
        match self.stages.iter_mut().find(|(name, _)| *name == stage) {
            Some((_, total)) => *total += time,
            None => self.stages.push((stage, time)),
        }
    }

    /// Adds the time since `started` to `stage`.
    fn since(&mut self, stage: &'static str, started: Instant) {
        self.add(stage, started.elapsed());
    }
}

/// Plans `frame` physically (counted as `plan`) and runs it (counted as `stage`).
async fn run_timed(
    frame: DataFrame,
    timings: &mut StageTimings,
    stage: &'static str,
) -> Result<Vec<RecordBatch>> {
    Ok(run_measured(frame).await?.record(timings, stage))
}

/// The batches of a stage with the time it took to plan physically and to run.
struct Measured {
    batches: Vec<RecordBatch>,
    plan: Duration,
    run: Duration,
}

impl Measured {
    /// Adds the times to `plan` and to `stage` and gives the batches.
    fn record(self, timings: &mut StageTimings, stage: &'static str) -> Vec<RecordBatch> {
        timings.add("plan", self.plan);
        timings.add(stage, self.run);
        self.batches
    }
}

/// Plans `frame` physically and runs it.
async fn run_measured(frame: DataFrame) -> Result<Measured> {
    let started = Instant::now();
    let task = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await?;
    let planned = Instant::now();
    let batches = datafusion::physical_plan::collect(plan, task).await?;
    Ok(Measured {
        batches,
        plan: planned - started,
        run: planned.elapsed(),
    })
}

/// Spans and error spans of one service within one trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Spans of the service.
    pub span_count: u32,
    /// Of those, spans with status error.
    pub error_count: u32,
}

/// One matching trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceResult {
    /// Lowercase hex with leading zeros stripped.
    pub trace_id: String,
    /// Service of the root span, when the root is known.
    pub root_service_name: Option<String>,
    /// Name of the root span, when the root is known.
    pub root_trace_name: Option<String>,
    /// Earliest span start.
    pub start_time_unix_nano: i64,
    /// Latest span end minus earliest span start, in milliseconds.
    pub duration_ms: i64,
    /// The output spansets: one, or one per group after `by()`, ordered by group.
    pub span_sets: Vec<SpanSetResult>,
    /// Spans and error spans per service of the whole trace.
    pub service_stats: BTreeMap<String, ServiceStats>,
}

/// One output spanset of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanSetResult {
    /// Spans matched before truncation to `spss`.
    pub matched: usize,
    /// The first `spss` matched spans by start time.
    pub spans: Vec<SpanResult>,
    /// Spanset attributes: the `by(…)` value of the group, then the values of the aggregates
    /// of scalar filters, such as `count()`.
    pub attributes: Vec<(String, AttrValue)>,
}

/// One matched span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanResult {
    /// 16 lowercase hex characters.
    pub span_id: String,
    /// Operation name.
    pub name: String,
    /// Span start.
    pub start_time_unix_nano: i64,
    /// Span duration.
    pub duration_nanos: i64,
    /// Attributes the query referenced or selected, by bare name, when the span has them.
    pub attributes: Vec<(String, AttrValue)>,
}

const MATCHED: &str = "__matched";
const MATCHED_ID: &str = "__matched_trace_id";
/// Each trace's counted spans, when the `traces` table decides the search.
const COUNTED: &str = "__counted";
const ROW: &str = "__row";
const START_NS: &str = "__start_ns";

/// A column by its exact name, which may contain dots.
fn unqualified(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

fn attr_column(i: usize, slot: usize) -> String {
    format!("__attr_{i}_{slot}")
}

/// Runs a search over `tenants`, newest slice first. After each job (one slice of one tenant)
/// `progress` receives the traces that job added and the metrics so far; the return value is
/// the complete answer, at most `limit` traces, newest first. A query that does not check is
/// refused before any job runs.
pub async fn search(
    engine: &QueryEngine,
    tenants: &[String],
    request: &SearchRequest,
    mut progress: impl FnMut(&[TraceResult], &SearchMetrics),
) -> Result<SearchResponse> {
    let mut timings = StageTimings::default();
    let started = Instant::now();
    let query = request.check()?;
    timings.since("parse", started);
    let limit = nonzero_or(request.limit, DEFAULT_LIMIT);
    let slices = if request.range == TimeRange::ALL {
        vec![TimeRange::ALL]
    } else {
        request.range.slices_newest_first(SLICE_NS, MAX_SLICES)
    };
    let mut metrics = block_metrics(engine, tenants, request.range);
    metrics.total_jobs = (slices.len() * tenants.len()) as u32;
    let mut held: Vec<TraceResult> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    'jobs: for slice in &slices {
        for tenant in tenants {
            let ctx = engine.session(tenant)?;
            let found =
                search_slice(&ctx, &query, *slice, limit, request.spss, &mut timings).await?;
            let added: Vec<TraceResult> = found
                .into_iter()
                .filter(|t| seen.insert(t.trace_id.clone()))
                .take(limit - held.len())
                .collect();
            metrics.completed_jobs += 1;
            progress(&added, &metrics);
            held.extend(added);
            if held.len() >= limit {
                break 'jobs;
            }
        }
    }
    held.sort_by(|a, b| {
        b.start_time_unix_nano
            .cmp(&a.start_time_unix_nano)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    // In a cluster, each shard no holder could answer is a job that did not complete.
    metrics.total_jobs += super::cluster::missing_shards().len() as u32;
    Ok(SearchResponse {
        traces: held,
        metrics,
        timings,
    })
}

/// The plan a search runs to pick the matching traces of its window, as DataFusion's
/// `EXPLAIN` prints it (logical and physical plan); with `analyze`, as `EXPLAIN ANALYZE`
/// prints it: run, with each operator's metrics.
pub async fn explain(
    engine: &QueryEngine,
    tenant: &str,
    request: &SearchRequest,
    analyze: bool,
) -> Result<String> {
    let query = request.check()?;
    let ctx = engine.session(tenant)?;
    let limit = nonzero_or(request.limit, DEFAULT_LIMIT);
    let plan = top_traces(&ctx, &query, request.range, limit)
        .await?
        .explain(false, analyze)?
        .collect()
        .await?;
    Ok(arrow::util::pretty::pretty_format_batches(&plan)?.to_string())
}

/// The matched spans, with the columns of `spans`, of the newest `limit` traces the search
/// finds in its window (searched in one pass), ordered by trace and start time: a stream
/// computed as it is read.
pub async fn matched_spans_stream(
    engine: &QueryEngine,
    tenant: &str,
    request: &SearchRequest,
) -> Result<SendableRecordBatchStream> {
    let query = request.check()?;
    let ctx = engine.session(tenant)?;
    let limit = nonzero_or(request.limit, DEFAULT_LIMIT);
    let top = top_traces(&ctx, &query, request.range, limit)
        .await?
        .select(vec![col(spans::TRACE_ID).alias(TRACE_SUMMARY_ID)])?;
    let (input, summary) = window_input(&ctx, request.range).await?;
    let lowered = Lowerer::new(summary).search(&query, input)?;
    let columns: Vec<Expr> = spans::schema()
        .fields()
        .iter()
        .map(|f| unqualified(f.name()))
        .collect();
    let frame = lowered
        .spans
        .join_on(
            top,
            JoinType::LeftSemi,
            [col(spans::TRACE_ID).eq(col(TRACE_SUMMARY_ID))],
        )?
        .select(columns)?
        .sort(vec![
            col(spans::TRACE_ID).sort(true, false),
            col(spans::START_TIME).sort(true, false),
        ])?;
    Ok(frame.execute_stream().await?)
}

fn nonzero_or(value: usize, default: usize) -> usize {
    if value == 0 { default } else { value }
}

/// Blocks of `tenants` whose spans may fall in `range`.
pub(super) fn block_metrics(
    engine: &QueryEngine,
    tenants: &[String],
    range: TimeRange,
) -> SearchMetrics {
    let mut metrics = SearchMetrics::default();
    for tenant in tenants {
        for block in engine.catalog().blocks(tenant, Signal::Traces) {
            if range.overlaps(block.min_time_ns, block.max_time_ns) {
                metrics.total_blocks += 1;
                metrics.total_block_bytes += block.bytes();
            }
        }
    }
    metrics
}

/// The spans of the traces overlapping `range`, with the trace summary beside them.
pub(super) async fn window_input(
    ctx: &SessionContext,
    range: TimeRange,
) -> Result<(DataFrame, DataFrame)> {
    let summary = lower::trace_summary(ctx).await?;
    let in_window = overlapping(summary.clone(), range)?;
    let input = ctx.table(TableKind::Spans.name()).await?.join_on(
        in_window.select(vec![col(TRACE_SUMMARY_ID)])?,
        JoinType::LeftSemi,
        [col(spans::TRACE_ID).eq(col(TRACE_SUMMARY_ID))],
    )?;
    Ok((input, summary))
}

/// The trace summaries of `summary` whose traces overlap `range`.
fn overlapping(summary: DataFrame, range: TimeRange) -> Result<DataFrame> {
    let mut frame = summary;
    let (start, end) = range.bounds();
    if let Some(start) = start {
        frame = frame
            .filter((ns(TRACE_SUMMARY_START) + col(TRACE_SUMMARY_DURATION)).gt_eq(lit(start)))?;
    }
    if let Some(end) = end {
        frame = frame.filter(ns(TRACE_SUMMARY_START).lt_eq(lit(end)))?;
    }
    Ok(frame)
}

fn ns(c: &str) -> Expr {
    cast(col(c), DataType::Int64)
}

/// The plan of the first pass: which traces overlapping `range` match, newest first, at most
/// `limit`, with their start and duration (their root names are read for them alone, by
/// [`root_names`]).
///
/// TraceQL is evaluated per trace, so the query runs over every trace and the window is
/// applied to the matched traces afterwards: the same answer as evaluating it over the traces
/// of the window only, without summarising every trace to find those. Only the matched
/// traces' rows of `traces` are summarised (a trace has one row per block it has spans in).
/// Where the `traces` table alone decides which traces match ([`SpanCount`]), no span is read.
async fn top_traces(
    ctx: &SessionContext,
    query: &Query,
    range: TimeRange,
    limit: usize,
) -> Result<DataFrame> {
    let summary = match SpanCount::of(query) {
        // The `traces` table alone says which traces match: one aggregate over it gives each
        // trace's summary and its counted spans, and no span is read.
        Some(counted) => lower::trace_times_with(
            ctx.table(TableKind::Traces.name()).await?,
            vec![sum(counted.row_count()).alias(COUNTED)],
        )?
        .filter(counted.keeps(col(COUNTED)))?,
        None => {
            let summary = lower::trace_summary(ctx).await?;
            let input = ctx.table(TableKind::Spans.name()).await?;
            let lowered = Lowerer::new(summary).search(query, input)?;
            // A trace matches when it has a matched span.
            let matched = lowered
                .spans
                .aggregate(vec![col(spans::TRACE_ID)], vec![])?
                .select(vec![col(spans::TRACE_ID).alias(MATCHED_ID)])?;
            // The matched ids are the join's build side: usually far fewer than the traces.
            let rows = matched.join_on(
                ctx.table(TableKind::Traces.name()).await?,
                JoinType::RightSemi,
                [col(MATCHED_ID).eq(col(traces::TRACE_ID))],
            )?;
            lower::trace_times_with(rows, Vec::new())?
        }
    };
    Ok(overlapping(summary, range)?
        .select(vec![
            col(TRACE_SUMMARY_ID).alias(spans::TRACE_ID),
            ns(TRACE_SUMMARY_START).alias(START_NS),
            col(TRACE_SUMMARY_DURATION),
        ])?
        .sort(vec![
            col(START_NS).sort(false, false),
            col(spans::TRACE_ID).sort(true, false),
        ])?
        .limit(0, Some(limit))?)
}

/// One job: the traces of one tenant's session overlapping `range` that `query` matches,
/// newest first, at most `limit`, each with its spansets and up to `spss` (0:
/// [`DEFAULT_SPSS`]) matched spans.
async fn search_slice(
    ctx: &SessionContext,
    query: &Query,
    range: TimeRange,
    limit: usize,
    spss: usize,
    timings: &mut StageTimings,
) -> Result<Vec<TraceResult>> {
    let spss = nonzero_or(spss, DEFAULT_SPSS);
    let started = Instant::now();
    let top = top_traces(ctx, query, range, limit).await?;
    timings.since("plan", started);
    let top_batches = run_timed(top, timings, "traces").await?;
    let mut traces = read_traces(&top_batches)?;
    if traces.is_empty() {
        return Ok(traces);
    }
    let mut ids = Vec::with_capacity(traces.len());
    for batch in &top_batches {
        let column = column(batch, spans::TRACE_ID)?;
        for row in 0..batch.num_rows() {
            ids.push(bytes_at(column, row));
        }
    }
    let roots = {
        let (ctx, ids) = (ctx.clone(), ids.clone());
        tokio::spawn(async move { root_names(&ctx, &ids).await })
    };

    // Second pass, over the spans of the chosen traces only (a few ids prune row groups and
    // pages by statistics; many are joined): their spansets and matched spans. TraceQL works
    // per trace, so the answer for these traces is the same as in the first pass.
    let started = Instant::now();
    if ids.len() <= MAX_LISTED_IDS {
        let held = Held::read(ctx, query, &ids, started, timings).await?;
        let started = Instant::now();
        let frame = held.second_pass(query)?;
        timings.since("plan", started);
        let batches = run_timed(frame.frame, timings, "spansets").await?;
        let started = Instant::now();
        let index = attach_sets(&mut traces, &batches, &frame.shape)?;
        attach_spans(&mut traces, &index, &batches, &frame.shape.outputs, spss)?;
        add_service_stats(&mut traces, &held.service_stats()?)?;
        timings.since("services", started);
        add_root_names(&mut traces, &joined(roots.await)?.record(timings, "roots"))?;
        return Ok(traces);
    }

    let top_spans = of_traces(
        ctx,
        ctx.table(TableKind::Spans.name()).await?,
        spans::TRACE_ID,
        &ids,
    )?;
    let stats = tokio::spawn(run_measured(service_stats(ctx, &ids).await?));
    let summary = lower::trace_summary(ctx).await?;
    let top_ids = ctx
        .read_batches(top_batches)?
        .select(vec![col(spans::TRACE_ID).alias(TRACE_SUMMARY_ID)])?;
    let second = SecondPass::plan(query, summary, top_spans, &top_ids, spss)?;
    timings.since("plan", started);

    // The stages read the same traces independently, so they run side by side.
    let SecondPass {
        sets,
        matched,
        shape,
    } = second;
    let sets = tokio::spawn(run_measured(sets));
    let matched = tokio::spawn(run_measured(matched));
    let sets = joined(sets.await)?.record(timings, "spansets");
    let matched = joined(matched.await)?.record(timings, "spans");
    let stats = joined(stats.await)?.record(timings, "services");
    let roots = joined(roots.await)?.record(timings, "roots");
    let index = attach_sets(&mut traces, &sets, &shape)?;
    attach_spans(&mut traces, &index, &matched, &shape.outputs, spss)?;
    add_service_stats(&mut traces, &stats)?;
    add_root_names(&mut traces, &roots)?;
    Ok(traces)
}

/// The spans of a search's chosen traces, when few enough to hold in memory: read once, with
/// only the columns the second pass uses (the others are NULL), and searched again in a
/// session made for a few hundred rows.
struct Held {
    /// A session of one partition whose optimizer only does what planning these small plans
    /// needs.
    ctx: SessionContext,
    /// The columns of `spans`, all nullable.
    schema: SchemaRef,
    /// The spans, with those columns.
    batches: Vec<RecordBatch>,
    /// The trace-level summaries of the chosen traces.
    summary: DataFrame,
}

/// A search's second pass over held spans, as one plan: every matched span, with its
/// spanset's columns riding along. A spanset's matched count is its number of rows, and the
/// first `spss` of them are shown: counted and cut while the rows are read, which on a few
/// hundred rows costs less than planning two windows.
struct HeldPass {
    frame: DataFrame,
    shape: SetShape,
}

impl Held {
    /// Reads the spans of the chosen traces, whose ids `ids` lists, with the columns the
    /// second pass of `query` needs. Planning counts from `started`.
    async fn read(
        ctx: &SessionContext,
        query: &Query,
        ids: &[Vec<u8>],
        started: Instant,
        timings: &mut StageTimings,
    ) -> Result<Self> {
        let summary = lower::summarize(of_traces(
            ctx,
            ctx.table(TableKind::Traces.name()).await?,
            traces::TRACE_ID,
            ids,
        )?)?;
        // Lowered once over the table only to learn which of its columns the pass reads.
        let probe = Lowerer::new(summary.clone())
            .search(query, ctx.table(TableKind::Spans.name()).await?)?;
        let mut used = used_columns(&probe.spans)?;
        used.extend(HELD_ALWAYS.iter().map(|name| name.to_string()));
        for (_, exprs) in probe.attributes.iter().filter_map(lower::output_attribute) {
            for expr in exprs {
                used.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
            }
        }
        let schema = spans::schema();
        let columns: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| used.contains(*name))
            .collect();
        timings.since("plan", started);
        let read = listed_rows(ctx, TableKind::Spans, ids, &columns)
            .await?
            .record(timings, "read");
        let started = Instant::now();
        let held_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let batches = read
            .iter()
            .map(|batch| {
                let columns = held_schema
                    .fields()
                    .iter()
                    .map(|f| match batch.column_by_name(f.name()) {
                        Some(c) => c.clone(),
                        None => arrow::array::new_null_array(f.data_type(), batch.num_rows()),
                    })
                    .collect();
                RecordBatch::try_new(held_schema.clone(), columns)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let held_ctx = held_session(ctx);
        // Read the chosen traces' summaries only if the pass joins them in (for trace-level
        // intrinsics).
        let summary = if used.contains(TRACE_SUMMARY_ID) {
            held_ctx.read_batches(summary.collect().await?)?
        } else {
            summary
        };
        timings.since("plan", started);
        Ok(Self {
            ctx: held_ctx,
            schema: held_schema,
            batches,
            summary,
        })
    }

    /// `query` lowered over the held spans: for each spanset (per trace, or per trace and
    /// group), its matched spans with the output attributes, each row also carrying the
    /// spanset's group values and aggregate values. Ordered by trace, group, start time and
    /// span id.
    fn second_pass(&self, query: &Query) -> Result<HeldPass> {
        let spans = self.ctx.read_table(Arc::new(MemTable::try_new(
            self.schema.clone(),
            vec![self.batches.clone()],
        )?))?;
        let lowered = Lowerer::new(self.summary.clone()).search(query, spans)?;
        let shape = SetShape::of(&lowered);
        let grouped = shape.grouped();
        let mut columns = shown_columns(&shape.outputs, grouped);
        let mut order = vec![col(spans::TRACE_ID).sort(true, false)];
        if grouped {
            for level in 0..shape.by_names.len() {
                columns.extend(lower::group_value(level).iter().map(|c| col(c.as_str())));
            }
            order.push(col(GROUP_KEY).sort(true, false));
        }
        columns.extend(shape.aggregates.iter().map(|name| unqualified(name)));
        order.extend(span_order());
        let frame = lowered.spans.select(columns)?.sort(order)?;
        Ok(HeldPass { frame, shape })
    }

    /// Spans and error spans per service of each held trace, in the rows of
    /// [`service_stats`]: trace id, service, spans, errors.
    fn service_stats(&self) -> Result<Vec<RecordBatch>> {
        let error = crate::schema::rows::status_name(crate::schema::rows::STATUS_CODE_ERROR);
        let mut counts: BTreeMap<(Vec<u8>, String), (i64, i64)> = BTreeMap::new();
        for batch in &self.batches {
            let ids = column(batch, spans::TRACE_ID)?;
            let services =
                arrow::compute::cast(column(batch, spans::SERVICE_NAME)?, &DataType::Utf8)?;
            let services = services.as_string::<i32>();
            let statuses =
                arrow::compute::cast(column(batch, spans::STATUS_CODE)?, &DataType::Utf8)?;
            let statuses = statuses.as_string::<i32>();
            for row in 0..batch.num_rows() {
                let entry = counts
                    .entry((bytes_at(ids, row), services.value(row).to_string()))
                    .or_default();
                entry.0 += 1;
                if statuses.is_valid(row) && statuses.value(row) == error {
                    entry.1 += 1;
                }
            }
        }
        let ids = FixedSizeBinaryArray::try_from_iter(counts.keys().map(|(id, _)| id))?;
        let services: StringArray = counts.keys().map(|(_, s)| Some(s.as_str())).collect();
        let spans: Int64Array = counts.values().map(|c| c.0).collect();
        let errors: Int64Array = counts.values().map(|c| c.1).collect();
        Ok(vec![RecordBatch::try_from_iter([
            ("trace_id", Arc::new(ids) as ArrayRef),
            ("service", Arc::new(services) as ArrayRef),
            ("spans", Arc::new(spans) as ArrayRef),
            ("errors", Arc::new(errors) as ArrayRef),
        ])?])
    }
}

/// Columns the held spans always carry: what the matched spans show, what orders them and
/// what the service counts read.
const HELD_ALWAYS: &[&str] = &[
    spans::TRACE_ID,
    spans::SPAN_ID,
    spans::NAME,
    spans::START_TIME,
    spans::DURATION_NS,
    spans::SERVICE_NAME,
    spans::STATUS_CODE,
];

/// A session like `ctx` for plans over a few hundred held rows: the state its engine built
/// once for the tenant ([`held_state`]), or one built now.
fn held_session(ctx: &SessionContext) -> SessionContext {
    let state = ctx.state();
    let held = match state.config().get_extension::<HeldState>() {
        Some(held) => held.0.clone(),
        None => held_state(&state),
    };
    SessionContext::new_with_state(held)
}

/// The state of a tenant's sessions for plans over held rows, kept in their search sessions.
#[derive(Debug)]
pub(super) struct HeldState(pub(super) SessionState);

/// A state like `state` for plans over a few hundred held rows: one partition, and of the
/// logical optimizer only the rules such plans need to be planned well (functions simplified
/// to what runs, `DISTINCT` as an aggregate, equi-join keys for hash joins, unused columns
/// dropped), in one pass. Of the physical optimizer, only what makes a plan of one partition
/// run correctly: the ordering each operator requires.
pub(super) fn held_state(state: &SessionState) -> SessionState {
    use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
    use datafusion::optimizer::optimize_projections::OptimizeProjections;
    use datafusion::optimizer::replace_distinct_aggregate::ReplaceDistinctWithAggregate;
    use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
    use datafusion::physical_optimizer::ensure_requirements::EnsureRequirements;
    use datafusion::physical_optimizer::output_requirements::OutputRequirements;
    let mut state = SessionStateBuilder::new_from_existing(state.clone())
        .with_optimizer_rules(vec![
            Arc::new(SimplifyExpressions::new()),
            Arc::new(ReplaceDistinctWithAggregate::new()),
            Arc::new(ExtractEquijoinPredicate::new()),
            Arc::new(OptimizeProjections::new()),
        ])
        .with_physical_optimizer_rules(vec![
            Arc::new(OutputRequirements::new_add_mode()),
            Arc::new(EnsureRequirements::new()),
            Arc::new(OutputRequirements::new_remove_mode()),
        ])
        .build();
    let options = state.config_mut().options_mut();
    options.execution.target_partitions = 1;
    options.optimizer.max_passes = 1;
    state
}

/// The plans of a search's second pass over the spans of its chosen traces.
struct SecondPass {
    /// Each trace's spansets.
    sets: DataFrame,
    /// Their first matched spans.
    matched: DataFrame,
    shape: SetShape,
}

impl SecondPass {
    /// `query` lowered over `spans` (the chosen traces' spans, whose ids `top_ids` lists)
    /// with `summary` beside them, keeping up to `spss` matched spans of each spanset.
    fn plan(
        query: &Query,
        summary: DataFrame,
        spans: DataFrame,
        top_ids: &DataFrame,
        spss: usize,
    ) -> Result<Self> {
        let lowered = Lowerer::new(summary).search(query, spans)?;
        let shape = SetShape::of(&lowered);
        let grouped = shape.grouped();
        let mut set_order = vec![col(spans::TRACE_ID).sort(true, false)];
        if grouped {
            set_order.push(col(GROUP_KEY).sort(true, false));
        }
        let sets = spanset_rows(&lowered)?.sort(set_order)?;
        let matched = matched_spans(
            lowered.spans,
            top_ids.clone(),
            &shape.outputs,
            spss,
            grouped,
        )?;
        Ok(Self {
            sets,
            matched,
            shape,
        })
    }
}

/// What a lowered search's spansets show beside their spans.
struct SetShape {
    /// The `by(…)` names of a grouped query, outermost first; empty when not grouped.
    by_names: Vec<String>,
    /// The columns of scalar-filter aggregates.
    aggregates: Vec<String>,
    /// The attributes the query outputs.
    outputs: Vec<(String, [Expr; 4])>,
}

impl SetShape {
    fn of(lowered: &LoweredSearch) -> Self {
        Self {
            by_names: lowered
                .group_by
                .iter()
                .map(|e| format!("by({e})"))
                .collect(),
            aggregates: aggregate_columns(lowered),
            outputs: lowered
                .attributes
                .iter()
                .filter_map(lower::output_attribute)
                .collect(),
        }
    }

    /// Whether the output is one spanset per trace and group.
    fn grouped(&self) -> bool {
        !self.by_names.is_empty()
    }
}

/// The names of the columns the plan of `frame` reads from its inputs: every column an
/// expression reads anywhere in it, subqueries included, except where a projection only
/// passes a column through (which a node above then names, if anything needs it). The
/// columns of `frame`'s own output are not included: the caller names those it reads.
fn used_columns(frame: &DataFrame) -> Result<HashSet<String>> {
    let mut names = HashSet::new();
    frame.logical_plan().apply_with_subqueries(|node| {
        let passes_through = matches!(node, LogicalPlan::Projection(_));
        node.apply_expressions(|expr| {
            if !(passes_through && matches!(expr, Expr::Column(_))) {
                names.extend(expr.column_refs().into_iter().map(|c| c.name.clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    Ok(names)
}

/// The answer of a spawned stage, or why the stage's task ended without one.
fn joined<T>(result: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    result.map_err(|e| QueryError::internal(format!("a search stage stopped: {e}")))?
}

/// Up to this many trace ids, a pass over some traces filters by a list of them (which prunes
/// row groups and pages when planned); beyond, it joins with them.
const MAX_LISTED_IDS: usize = 1000;
/// The trace ids a join with many of them reads.
const WANTED_ID: &str = "__wanted_trace_id";

/// The rows of `frame` whose trace id, in `column`, is one of `ids` (16 bytes each).
fn of_traces(
    ctx: &SessionContext,
    frame: DataFrame,
    column: &str,
    ids: &[Vec<u8>],
) -> Result<DataFrame> {
    if ids.len() <= MAX_LISTED_IDS {
        let list = ids
            .iter()
            .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.clone()))))
            .collect();
        return Ok(frame.filter(col(column).in_list(list, false))?);
    }
    let wanted = FixedSizeBinaryArray::try_from_iter(ids.iter())?;
    let wanted = RecordBatch::try_from_iter([(WANTED_ID, Arc::new(wanted) as ArrayRef)])?;
    Ok(frame.join_on(
        ctx.read_batch(wanted)?,
        JoinType::LeftSemi,
        [col(column).eq(col(WANTED_ID))],
    )?)
}

/// The unnested `services` item in the service-stats query.
const SERVICE: &str = "__service";

/// Spans and error spans per service of each trace of `ids` (16 bytes each): rows of trace
/// id, service, spans, errors. The `traces` table keeps these counts for each trace (one row
/// per block the trace has spans in), a tenth of the size of the spans.
async fn service_stats(ctx: &SessionContext, ids: &[Vec<u8>]) -> Result<DataFrame> {
    let item = |name: &str| get_field(col(SERVICE), name);
    Ok(of_traces(
        ctx,
        ctx.table(TableKind::Traces.name()).await?,
        traces::TRACE_ID,
        ids,
    )?
    .select(vec![
        col(traces::TRACE_ID),
        col(traces::SERVICES).alias(SERVICE),
    ])?
    .unnest_columns(&[SERVICE])?
    .aggregate(
        vec![
            col(traces::TRACE_ID),
            cast(item(traces::service::SERVICE_NAME), DataType::Utf8).alias(SERVICE),
        ],
        vec![
            sum(item(traces::service::SPAN_COUNT)).alias("spans"),
            sum(item(traces::service::ERROR_COUNT)).alias("errors"),
        ],
    )?)
}

/// The `traces` rows of the traces of `ids` (16 bytes each), with their root service and
/// root span name.
async fn root_names(ctx: &SessionContext, ids: &[Vec<u8>]) -> Result<Measured> {
    listed_rows(
        ctx,
        TableKind::Traces,
        ids,
        &[
            traces::TRACE_ID,
            traces::ROOT_SERVICE_NAME,
            traces::ROOT_SPAN_NAME,
        ],
    )
    .await
}

/// The rows of `table` (`spans` or `traces`) of the traces of `ids` (16 bytes each), with
/// `columns`. Up to [`MAX_LISTED_IDS`] ids, the plan is one scan of the table, told the ids,
/// under a filter by the list: planned directly, since the optimizers would take longer than
/// such a read does and have nothing to change in it. More ids are joined, in a plan the
/// optimizers make.
async fn listed_rows(
    ctx: &SessionContext,
    table: TableKind,
    ids: &[Vec<u8>],
    columns: &[&str],
) -> Result<Measured> {
    const TRACE_ID: &str = spans::TRACE_ID;
    if ids.len() > MAX_LISTED_IDS {
        let rows = of_traces(ctx, ctx.table(table.name()).await?, TRACE_ID, ids)?;
        return run_measured(rows.select_columns(columns)?).await;
    }
    let started = Instant::now();
    let provider = ctx.table_provider(table.name()).await?;
    let schema = provider.schema();
    let mut read = columns
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if !columns.contains(&TRACE_ID) {
        read.push(schema.index_of(TRACE_ID)?);
    }
    let list = ids
        .iter()
        .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.clone()))))
        .collect();
    let filter = col(TRACE_ID).in_list(list, false);
    let state = ctx.state();
    let scan = provider
        .scan(&state, Some(&read), std::slice::from_ref(&filter), None)
        .await?;
    let scanned = DFSchema::try_from(scan.schema().as_ref().clone())?;
    let plan = FilterExecBuilder::new(state.create_physical_expr(filter, &scanned)?, scan)
        .apply_projection(Some((0..columns.len()).collect()))?
        .build()?;
    let planned = Instant::now();
    let batches = datafusion::physical_plan::collect(Arc::new(plan), ctx.task_ctx()).await?;
    Ok(Measured {
        batches,
        plan: planned - started,
        run: planned.elapsed(),
    })
}

/// Where each trace of `found` is, by its trace id (short hex).
fn positions(found: &[TraceResult]) -> HashMap<String, usize> {
    found
        .iter()
        .enumerate()
        .map(|(i, t)| (t.trace_id.clone(), i))
        .collect()
}

/// Sets the root names of `found` from the rows of [`root_names`]. Where a trace has several
/// rows with a root, each name is the greatest, as in [`lower::summarize`].
fn add_root_names(found: &mut [TraceResult], batches: &[RecordBatch]) -> Result<()> {
    let index = positions(found);
    let greatest = |held: &mut Option<String>, value: Option<String>| {
        if value > *held {
            *held = value;
        }
    };
    for batch in batches {
        let ids = column(batch, traces::TRACE_ID)?;
        let services =
            arrow::compute::cast(column(batch, traces::ROOT_SERVICE_NAME)?, &DataType::Utf8)?;
        let names = arrow::compute::cast(column(batch, traces::ROOT_SPAN_NAME)?, &DataType::Utf8)?;
        for row in 0..batch.num_rows() {
            let hex = ids::trace_id_short_hex(&bytes_at(ids, row));
            let Some(&i) = index.get(&hex) else { continue };
            greatest(&mut found[i].root_service_name, opt_string(&services, row));
            greatest(&mut found[i].root_trace_name, opt_string(&names, row));
        }
    }
    Ok(())
}

/// Fills `service_stats` of `found` from the rows of [`service_stats`].
fn add_service_stats(found: &mut [TraceResult], batches: &[RecordBatch]) -> Result<()> {
    let index = positions(found);
    for batch in batches {
        let ids = batch.column(0).as_fixed_size_binary();
        let services = batch.column(1).as_string::<i32>();
        let span_counts = batch.column(2).as_primitive::<Int64Type>();
        let error_counts = batch.column(3).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let hex = ids::trace_id_short_hex(ids.value(row));
            let Some(&i) = index.get(&hex) else { continue };
            let stats = found[i]
                .service_stats
                .entry(services.value(row).to_string())
                .or_default();
            if span_counts.is_valid(row) {
                stats.span_count += span_counts.value(row) as u32;
            }
            if error_counts.is_valid(row) {
                stats.error_count += error_counts.value(row) as u32;
            }
        }
    }
    Ok(())
}

/// The columns of `lowered.spans` that carry aggregate values of the spansets.
fn aggregate_columns(lowered: &LoweredSearch) -> Vec<String> {
    lowered
        .spans
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n.starts_with(SPANSET_ATTRIBUTE_PREFIX))
        .collect()
}

/// One row per output spanset (per trace, or per trace and group after `by()`): the trace,
/// the group, how many spans matched and the spanset's aggregate values.
fn spanset_rows(lowered: &LoweredSearch) -> Result<DataFrame> {
    let mut set_columns = vec![col(spans::TRACE_ID)];
    if !lowered.group_by.is_empty() {
        set_columns.push(col(GROUP_KEY));
        for level in 0..lowered.group_by.len() {
            set_columns.extend(lower::group_value(level).iter().map(|c| col(c.as_str())));
        }
    }
    let mut set_values = vec![count(lit(1)).alias(MATCHED)];
    for name in aggregate_columns(lowered) {
        // Constant within a spanset.
        set_values.push(max(unqualified(&name)).alias(name));
    }
    Ok(lowered.spans.clone().aggregate(set_columns, set_values)?)
}

/// Where each spanset went: (trace id hex, group key) to (trace index, spanset index).
type SetIndex = HashMap<(String, String), (usize, usize)>;

/// The first `spss` matched spans of each top trace (and group), with their output
/// attributes.
fn matched_spans(
    matched: DataFrame,
    top_ids: DataFrame,
    outputs: &[(String, [Expr; 4])],
    spss: usize,
    grouped: bool,
) -> Result<DataFrame> {
    let frame = matched
        .join_on(
            top_ids,
            JoinType::LeftSemi,
            [col(spans::TRACE_ID).eq(col(TRACE_SUMMARY_ID))],
        )?
        .window(vec![span_rank(grouped)?])?
        .filter(col(ROW).lt_eq(lit(spss as u64)))?
        .select(shown_columns(outputs, grouped))?
        .sort(
            std::iter::once(col(spans::TRACE_ID).sort(true, false))
                .chain(span_order())
                .collect(),
        )?;
    Ok(frame)
}

/// The columns of a spanset's span: trace and span id, name, start and duration, the group key
/// when `grouped`, and the values of `outputs` (four columns each, see [`attr_column`]).
fn shown_columns(outputs: &[(String, [Expr; 4])], grouped: bool) -> Vec<Expr> {
    let mut columns = vec![
        col(spans::TRACE_ID),
        col(spans::SPAN_ID),
        cast(col(spans::NAME), DataType::Utf8).alias(spans::NAME),
        cast(col(spans::START_TIME), DataType::Int64).alias(spans::START_TIME),
        col(spans::DURATION_NS),
    ];
    if grouped {
        columns.push(col(GROUP_KEY));
    }
    for (i, (_, exprs)) in outputs.iter().enumerate() {
        for (slot, e) in exprs.iter().enumerate() {
            columns.push(e.clone().alias(attr_column(i, slot)));
        }
    }
    columns
}

/// The order of the spans within a spanset: by start time, then span id.
fn span_order() -> [datafusion::logical_expr::SortExpr; 2] {
    [
        col(spans::START_TIME).sort(true, false),
        col(spans::SPAN_ID).sort(true, false),
    ]
}

/// What a spanset is within the spans: a trace, or a trace and group when `grouped`.
fn spanset_partition(grouped: bool) -> Vec<Expr> {
    let mut partition = vec![col(spans::TRACE_ID)];
    if grouped {
        partition.push(col(GROUP_KEY));
    }
    partition
}

/// Each span's place in its spanset, from 1, in [`span_order`], as column [`ROW`].
fn span_rank(grouped: bool) -> Result<Expr> {
    Ok(row_number()
        .partition_by(spanset_partition(grouped))
        .order_by(span_order().to_vec())
        .build()?
        .alias(ROW))
}

pub(super) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| QueryError::internal(format!("search plan lost the column {name}")))
}

pub(super) fn opt_string(array: &dyn Array, row: usize) -> Option<String> {
    let strings = array.as_string_opt::<i32>()?;
    strings
        .is_valid(row)
        .then(|| strings.value(row).to_string())
}

pub(super) fn i64_at(array: &dyn Array, row: usize) -> Option<i64> {
    let ints = array.as_primitive_opt::<Int64Type>()?;
    ints.is_valid(row).then(|| ints.value(row))
}

pub(super) fn bytes_at(array: &dyn Array, row: usize) -> Vec<u8> {
    array
        .as_fixed_size_binary_opt()
        .map(|a| a.value(row).to_vec())
        .unwrap_or_default()
}

fn read_traces(batches: &[RecordBatch]) -> Result<Vec<TraceResult>, QueryError> {
    let mut out = Vec::new();
    for batch in batches {
        let ids = column(batch, spans::TRACE_ID)?;
        let start = column(batch, START_NS)?;
        let duration = column(batch, TRACE_SUMMARY_DURATION)?;
        for row in 0..batch.num_rows() {
            out.push(TraceResult {
                trace_id: ids::trace_id_short_hex(&bytes_at(ids, row)),
                root_service_name: None,
                root_trace_name: None,
                start_time_unix_nano: i64_at(start, row).unwrap_or_default(),
                duration_ms: i64_at(duration, row).unwrap_or_default() / 1_000_000,
                span_sets: Vec::new(),
                service_stats: BTreeMap::new(),
            });
        }
    }
    Ok(out)
}

/// The first non-NULL of a value's string, int, float and bool columns.
pub(super) fn typed_value<S: AsRef<str>>(
    batch: &RecordBatch,
    names: &[S; 4],
    row: usize,
) -> Result<Option<AttrValue>, QueryError> {
    let [text, int, float, boolean] = names.each_ref().map(AsRef::as_ref);
    if let Some(s) = opt_string(column(batch, text)?, row) {
        return Ok(Some(AttrValue::Str(s)));
    }
    if let Some(v) = i64_at(column(batch, int)?, row) {
        return Ok(Some(AttrValue::Int(v)));
    }
    if let Some(f) = column(batch, float)?.as_primitive_opt::<Float64Type>()
        && f.is_valid(row)
    {
        return Ok(Some(AttrValue::Float(f.value(row))));
    }
    if let Some(b) = column(batch, boolean)?.as_boolean_opt()
        && b.is_valid(row)
    {
        return Ok(Some(AttrValue::Bool(b.value(row))));
    }
    Ok(None)
}

/// The group key of a row, or "" without `by()`.
fn group_key(batch: &RecordBatch, row: usize) -> String {
    batch
        .column_by_name(GROUP_KEY)
        .and_then(|c| opt_string(c.as_ref(), row))
        .unwrap_or_default()
}

/// Adds one spanset per (trace, group) of the rows of `batches` to its trace, in row order,
/// from the first row of each.
fn attach_sets(
    traces: &mut [TraceResult],
    batches: &[RecordBatch],
    shape: &SetShape,
) -> Result<SetIndex, QueryError> {
    let positions: HashMap<String, usize> = traces
        .iter()
        .enumerate()
        .map(|(i, t)| (t.trace_id.clone(), i))
        .collect();
    let mut index = SetIndex::new();
    for batch in batches {
        let ids = column(batch, spans::TRACE_ID)?;
        let matched = batch.column_by_name(MATCHED);
        for row in 0..batch.num_rows() {
            let trace_id = ids::trace_id_short_hex(&bytes_at(ids, row));
            let Some(&t) = positions.get(&trace_id) else {
                continue;
            };
            let key = (trace_id, group_key(batch, row));
            if let Some(&(t, set)) = index.get(&key) {
                // Another row of a spanset already added: one more matched span, unless the
                // rows carry the count.
                if matched.is_none() {
                    traces[t].span_sets[set].matched += 1;
                }
                continue;
            }
            let mut attributes = Vec::new();
            for (level, name) in shape.by_names.iter().enumerate() {
                // A nil group has no value to show.
                if let Some(value) = typed_value(batch, &lower::group_value(level), row)? {
                    attributes.push((name.clone(), value));
                }
            }
            for name in &shape.aggregates {
                let values = column(batch, name)?;
                let value = match values.data_type() {
                    DataType::Int64 => i64_at(values, row).map(AttrValue::Int),
                    _ => values
                        .as_primitive_opt::<Float64Type>()
                        .filter(|f| f.is_valid(row))
                        .map(|f| AttrValue::Float(f.value(row))),
                };
                if let Some(value) = value {
                    let label = name.trim_start_matches(SPANSET_ATTRIBUTE_PREFIX);
                    attributes.push((label.to_string(), value));
                }
            }
            let sets = &mut traces[t].span_sets;
            index.insert(key, (t, sets.len()));
            sets.push(SpanSetResult {
                matched: match matched {
                    Some(matched) => i64_at(matched, row).unwrap_or_default().max(0) as usize,
                    None => 1,
                },
                spans: Vec::new(),
                attributes,
            });
        }
    }
    Ok(index)
}

/// Adds the spans of the rows of `batches`, in row order, to their spansets, up to `spss`
/// spans each.
fn attach_spans(
    traces: &mut [TraceResult],
    index: &SetIndex,
    batches: &[RecordBatch],
    outputs: &[(String, [Expr; 4])],
    spss: usize,
) -> Result<(), QueryError> {
    for batch in batches {
        let ids = column(batch, spans::TRACE_ID)?;
        let span_ids = column(batch, spans::SPAN_ID)?;
        let names = column(batch, spans::NAME)?;
        let starts = column(batch, spans::START_TIME)?;
        let durations = column(batch, spans::DURATION_NS)?;
        for row in 0..batch.num_rows() {
            let key = (
                ids::trace_id_short_hex(&bytes_at(ids, row)),
                group_key(batch, row),
            );
            let Some(&(t, set)) = index.get(&key) else {
                continue;
            };
            if traces[t].span_sets[set].spans.len() >= spss {
                continue;
            }
            let mut attributes = Vec::new();
            for (i, (key, _)) in outputs.iter().enumerate() {
                let names = [0, 1, 2, 3].map(|slot| attr_column(i, slot));
                if let Some(value) = typed_value(batch, &names, row)? {
                    attributes.push((key.clone(), value));
                }
            }
            traces[t].span_sets[set].spans.push(SpanResult {
                span_id: ids::hex(&bytes_at(span_ids, row)),
                name: opt_string(names, row).unwrap_or_default(),
                start_time_unix_nano: i64_at(starts, row).unwrap_or_default(),
                duration_nanos: i64_at(durations, row).unwrap_or_default(),
                attributes,
            });
        }
    }
    Ok(())
}
