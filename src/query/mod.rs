//! Query execution: tenant-scoped DataFusion sessions over the spanlake tables.
//!
//! Every query gets a fresh [`SessionContext`] holding only its tenant's `spans` and `traces`,
//! sharing one runtime whose memory pool bounds all queries together. SQL runs with DDL, DML
//! (including `COPY`) and statements refused, and with no table function that reads files, so
//! a query can reach nothing but its tenant's tables.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::parser::ParserError;

use crate::storage::{Catalog, Storage};
use crate::tables::{LiveSource, SpanlakeTable, TableKind};
pub mod search;

/// Errors of a query, split by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is invalid or not allowed: the client's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The query is valid but the memory limit stopped it.
    #[error("query exceeded the memory limit: {0}")]
    ResourcesExhausted(String),
    /// Anything else went wrong while running it.
    #[error("query failed: {0}")]
    Execution(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => QueryError::Invalid(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(_) => {
                QueryError::ResourcesExhausted(e.strip_backtrace())
            }
            DataFusionError::ParquetError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_) => QueryError::Execution(e.strip_backtrace()),
            _ => {
                let message = e.strip_backtrace();
                // Errors raised while evaluating user expressions (a bad id literal, a division
                // by zero) surface as execution errors but are the query's fault.
                if matches!(
                    e.find_root(),
                    DataFusionError::Execution(_) | DataFusionError::ArrowError(..)
                ) {
                    QueryError::Invalid(message)
                } else {
                    QueryError::Execution(message)
                }
            }
        }
    }
}

impl From<ParserError> for QueryError {
    fn from(e: ParserError) -> Self {
        QueryError::Invalid(e.to_string())
    }
}

/// Builds tenant-scoped sessions and runs SQL in them.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    runtime: Arc<RuntimeEnv>,
    catalog: Arc<Catalog>,
    live: Arc<dyn LiveSource>,
}

impl QueryEngine {
    /// An engine reading `storage` and `live`, with all queries together bounded to
    /// `memory_limit` bytes.
    pub fn new(
        storage: &Storage,
        catalog: Arc<Catalog>,
        live: Arc<dyn LiveSource>,
        memory_limit: usize,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
            .build_arc()?;
        runtime.register_object_store(Storage::object_store_url().as_ref(), storage.store());
        Ok(Self {
            runtime,
            catalog,
            live,
        })
    }

    /// The blocks this engine reads.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A session that sees exactly `tenant`'s tables.
    pub fn session(&self, tenant: &str) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("spanlake", "public");
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        for kind in [TableKind::Spans, TableKind::Traces] {
            let table = SpanlakeTable::new(kind, tenant, self.catalog.clone(), self.live.clone());
            ctx.register_table(kind.name(), Arc::new(table))?;
        }
        spanlake_udfs::register(&ctx);
        Ok(ctx)
    }

    /// The options every user query runs with: read-only, no DDL, DML or statements.
    pub fn sql_options() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// Runs one SQL query for `tenant` and collects the result.
    pub async fn sql(
        &self,
        tenant: &str,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let ctx = self.session(tenant)?;
        let frame = ctx.sql_with_options(sql, Self::sql_options()).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok((schema, batches))
    }
}
