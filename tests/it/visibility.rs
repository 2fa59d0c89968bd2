//! Exactly-once visibility: while spans stream in and blocks flush, `count(*)` never counts a
//! span twice and never misses an acknowledged one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use spanlake::generator::Generator;

use crate::common::{TestServer, engine_count, span_count};

fn committed_blocks(server: &TestServer) -> usize {
    let dir = server
        .dir
        .path()
        .join("blocks/single-tenant/traces/shard-0");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().join("meta.json").exists())
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_during_concurrent_ingest_and_flush_is_exact() {
    let server = TestServer::start_with(|c| {
        c.ingester.trace_idle = Duration::from_millis(20);
        c.ingester.max_block_age = Duration::ZERO;
        c.ingester.flush_check = Duration::from_millis(10);
    })
    .await;
    let started = Arc::new(AtomicI64::new(0));
    let acked = Arc::new(AtomicI64::new(0));
    let mut client = server.grpc_client().await;
    let sender = {
        let (started, acked) = (started.clone(), acked.clone());
        tokio::spawn(async move {
            let mut generator = Generator::new(99);
            for n in 0..400 {
                let request = generator.trace_at(n * 1_000_000);
                let spans = span_count(&request) as i64;
                started.fetch_add(spans, Ordering::SeqCst);
                client.export(request).await.unwrap();
                acked.fetch_add(spans, Ordering::SeqCst);
                if n % 40 == 0 {
                    // Let a few flushes happen between bursts.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        })
    };
    let mut polls = 0;
    while !sender.is_finished() {
        let lower = acked.load(Ordering::SeqCst);
        let count = server.count("SELECT count(*) FROM spans").await;
        let upper = started.load(Ordering::SeqCst);
        assert!(
            lower <= count && count <= upper,
            "count {count} outside [{lower}, {upper}]"
        );
        polls += 1;
    }
    sender.await.unwrap();
    let total = acked.load(Ordering::SeqCst);
    assert_eq!(server.count("SELECT count(*) FROM spans").await, total);
    server.server.ingester.flush(true).await.unwrap();
    assert_eq!(server.count("SELECT count(*) FROM spans").await, total);
    assert_eq!(
        server
            .count("SELECT count(DISTINCT span_id) FROM spans")
            .await,
        total
    );
    assert!(polls > 5, "only {polls} polls ran during ingest");
    assert!(
        committed_blocks(&server) > 3,
        "only {} blocks were flushed",
        committed_blocks(&server)
    );
}

#[tokio::test]
async fn after_restart_flushed_and_replayed_data_read_as_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path());
    config.ingester.trace_idle = Duration::from_secs(3600);
    let mut generator = Generator::new(5);
    let opened = spanlake::server::open(&config, false).await.unwrap();
    let mut sent = 0;
    for n in 0..20 {
        let spans = spanlake::schema::otlp::spans_from_request(&generator.trace_at(n)).unwrap();
        sent += spans.len() as i64;
        opened.ingester.push("single-tenant", spans).await.unwrap();
        if n == 9 {
            opened.ingester.flush(true).await.unwrap();
        }
    }
    drop(opened);
    let reopened = spanlake::server::open(&config, false).await.unwrap();
    let report = reopened.ingester.replay_report();
    assert!(
        report.rows_replayed > 0 && report.rows_replayed < sent as usize,
        "{report:?}"
    );
    assert_eq!(
        engine_count(&reopened.engine, "SELECT count(*) FROM spans").await,
        sent
    );
}

#[tokio::test]
async fn traces_spread_over_shards_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path());
    config.ingester.shards = 4;
    let opened = spanlake::server::open(&config, false).await.unwrap();
    let mut generator = Generator::new(17);
    let mut sent = 0;
    for n in 0..64 {
        let spans = spanlake::schema::otlp::spans_from_request(&generator.trace_at(n)).unwrap();
        sent += spans.len() as i64;
        opened.ingester.push("single-tenant", spans).await.unwrap();
    }
    let report = opened.ingester.flush(true).await.unwrap();
    assert_eq!(
        report.blocks, 4,
        "64 traces over 4 shards make one block per shard"
    );
    let shards = std::fs::read_dir(dir.path().join("blocks/single-tenant/traces"))
        .unwrap()
        .count();
    assert_eq!(shards, 4);
    assert_eq!(
        engine_count(&opened.engine, "SELECT count(*) FROM spans").await,
        sent
    );
    let batches = opened
        .engine
        .sql("single-tenant", "SELECT count(*) FROM (SELECT trace_id FROM traces GROUP BY trace_id HAVING count(*) > 1)")
        .await
        .unwrap()
        .1;
    assert_eq!(
        crate::common::single_i64(&batches),
        0,
        "a trace lives in exactly one shard"
    );
}

#[tokio::test]
async fn reads_between_writes_see_every_open_span_once() {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::common::open_holding_live(dir.path()).await;
    let mut generator = Generator::new(11);
    let mut trace = |n: i64| {
        spanlake::schema::otlp::spans_from_request(&generator.trace_at(n * 1_000_000)).unwrap()
    };
    let count = |query: &'static str| engine_count(&opened.engine, query);
    let mut sent = 0;
    let mut first = Vec::new();
    for n in 0..40 {
        let spans = trace(n);
        if n == 0 {
            first = spans.clone();
        }
        sent += spans.len() as i64;
        opened.ingester.push("single-tenant", spans).await.unwrap();
    }
    // The first read converts every open trace; the reads after each change below read that
    // beside the changed traces, until so many changed that all are converted again.
    assert_eq!(count("SELECT count(*) FROM spans").await, sent);

    // A new span in an open trace, and a span sent again with a new name (it replaces the
    // earlier copy).
    let mut added = first[1].clone();
    added.span_id = [0xee; 8];
    let mut renamed = first[2].clone();
    renamed.name = "renamed".into();
    opened
        .ingester
        .push("single-tenant", vec![added, renamed])
        .await
        .unwrap();
    sent += 1;
    assert_eq!(count("SELECT count(*) FROM spans").await, sent);
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE name = 'renamed'").await,
        1
    );

    // A few new traces, then so many that every open trace is converted again.
    for batch in [40..43, 43..80] {
        for n in batch {
            let spans = trace(n);
            sent += spans.len() as i64;
            opened.ingester.push("single-tenant", spans).await.unwrap();
        }
        assert_eq!(count("SELECT count(*) FROM spans").await, sent);
        assert_eq!(
            count("SELECT count(DISTINCT (trace_id, span_id)) FROM spans").await,
            sent
        );
    }
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE name = 'renamed'").await,
        1
    );

    // Cut into blocks, the traces are read from them alone.
    opened.ingester.flush(true).await.unwrap();
    assert_eq!(count("SELECT count(*) FROM spans").await, sent);
    assert_eq!(
        count("SELECT count(DISTINCT (trace_id, span_id)) FROM spans").await,
        sent
    );
}

/// Traces the ingester holds open, and how many spans they have.
async fn push_traces(ingester: &spanlake::ingester::Ingester, traces: i64) -> i64 {
    let mut generator = Generator::new(5);
    let mut sent = 0;
    for n in 0..traces {
        let request = generator.trace_at(n * 1_000_000);
        let spans = spanlake::schema::otlp::spans_from_request(&request).unwrap();
        sent += spans.len() as i64;
        ingester.push("single-tenant", spans).await.unwrap();
    }
    sent
}

/// `SELECT count(*) FROM spans`, planned (its blocks listed) but not run.
async fn planned_count(ctx: &SessionContext) -> Arc<dyn datafusion::physical_plan::ExecutionPlan> {
    ctx.sql("SELECT count(*) FROM spans")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

async fn run(plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>, ctx: &SessionContext) -> i64 {
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .unwrap();
    crate::common::single_i64(&batches)
}

#[tokio::test]
async fn a_plan_made_before_a_flush_reads_the_flushed_rows_live_and_only_it_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::common::open_holding_live(dir.path()).await;
    let sent = push_traces(&opened.ingester, 30).await;
    let ctx = opened.engine.session("single-tenant").unwrap();
    let planned = planned_count(&ctx).await;

    // Flushed after the plan listed (no) blocks: the plan still finds the rows live.
    opened.ingester.flush(true).await.unwrap();
    assert_eq!(opened.ingester.live_span_count() as i64, sent);
    assert_eq!(run(planned.clone(), &ctx).await, sent);
    // A plan made after the flush reads the block alone, as the one before still reads live.
    assert_eq!(
        engine_count(&opened.engine, "SELECT count(*) FROM spans").await,
        sent
    );
    assert_eq!(run(planned.clone(), &ctx).await, sent);

    // Without the plan nothing keeps the rows: the next flush releases them.
    drop(planned);
    assert_eq!(opened.ingester.pins_held(), 0);
    opened.ingester.flush(false).await.unwrap();
    assert_eq!(opened.ingester.live_span_count(), 0);
    assert_eq!(
        engine_count(&opened.engine, "SELECT count(*) FROM spans").await,
        sent
    );
}

#[tokio::test]
async fn a_plan_older_than_the_grace_fails_rather_than_miss_released_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path());
    config.ingester.trace_idle = Duration::from_secs(3600);
    config.ingester.max_block_age = Duration::from_secs(3600);
    config.ingester.flushed_grace = Duration::ZERO;
    let opened = spanlake::server::open(&config, false).await.unwrap();
    push_traces(&opened.ingester, 5).await;
    let ctx = opened.engine.session("single-tenant").unwrap();
    let planned = planned_count(&ctx).await;
    opened.ingester.flush(true).await.unwrap();
    assert_eq!(
        opened.ingester.live_span_count(),
        0,
        "no grace: released at once"
    );
    let error = datafusion::physical_plan::collect(planned, ctx.task_ctx())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("run the query again"), "{error}");
}
