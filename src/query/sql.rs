//! SQL: DataFusion's dialect over a tenant's tables, read-only.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::context::SQLOptions;

use super::{QueryEngine, Result};

/// The options every user query runs with: read-only, no DDL, DML or statements.
pub fn options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl QueryEngine {
    /// Runs one SQL query for `tenant` and collects the result.
    pub async fn sql(&self, tenant: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let ctx = self.session(tenant)?;
        let frame = ctx.sql_with_options(sql, options()).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok((schema, batches))
    }
}
