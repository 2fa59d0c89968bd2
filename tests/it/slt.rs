//! Runs `sql-fixtures/*.slt` against the real engine over a fixed generated dataset: 200 traces
//! from seed 42 starting at 2024-01-01T00:00:00Z, half flushed to a block, half live.
//! `SPANLAKE_SLT_COMPLETE=1` rewrites the expected results instead of checking them.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use spanlake::generator::Generator;
use spanlake::query::QueryEngine;
use spanlake::schema::otlp::spans_from_request;
use sqllogictest::{DBOutput, DefaultColumnType};

/// 2024-01-01T00:00:00Z in Unix nanoseconds.
pub const FIXTURE_START_NS: i64 = 1_704_067_200_000_000_000;

struct Db {
    engine: QueryEngine,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let (schema, batches) = self
            .engine
            .sql("single-tenant", sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let batches =
            spanlake::schema::display::hex_ids(&batches).map_err(|e| SltError(e.to_string()))?;
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<_, _>>()
                .map_err(|e| SltError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; schema.fields().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_fixtures_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path());
    config.ingester.trace_idle = std::time::Duration::from_secs(3600);
    let opened = spanlake::server::open(&config, false).await.unwrap();
    let mut generator = Generator::new(42);
    for n in 0..200 {
        let spans =
            spans_from_request(&generator.trace_at(FIXTURE_START_NS + n * 1_000_000_000)).unwrap();
        opened.ingester.push("single-tenant", spans).await.unwrap();
        if n == 99 {
            opened.ingester.flush(true).await.unwrap();
        }
    }
    let engine = opened.engine.clone();
    let _keep = Arc::new(opened);

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql-fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", fixtures.display());
    for file in files {
        let engine = engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok(Db { engine }) }
        });
        if std::env::var_os("SPANLAKE_SLT_COMPLETE").is_some() {
            // Rewrites the expected results from what the engine answers now: review the diff.
            runner
                .update_test_file(
                    &file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else {
            runner
                .run_file_async(&file)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}
