//! SQL: DataFusion's dialect over a tenant's tables, read-only.
//!
//! A query is planned into a [`Statement`] (its schema and, for placeholders `$1`/`?`, its
//! parameter schema), bound to parameter values if it has any, and run as a stream of record
//! batches that are produced as the client reads them: nothing is materialised here. The
//! tables a tenant's SQL sees are listed by [`QueryEngine::tables`], the metadata Flight SQL
//! clients browse.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;

use super::{QueryEngine, QueryError, Result};
use crate::tables::PartialShards;

/// The options every user query runs with: read-only, no DDL, DML or statements.
pub fn options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A planned SQL query of one tenant.
#[derive(Debug, Clone)]
pub struct Statement {
    frame: DataFrame,
}

/// A table a tenant's SQL can read.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The catalog holding it.
    pub catalog: String,
    /// The schema holding it.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `TABLE` or `VIEW`.
    pub table_type: &'static str,
    /// Its columns.
    pub arrow_schema: SchemaRef,
}

impl Statement {
    /// The columns of the answer.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.frame.schema().as_arrow().clone())
    }

    /// The placeholders `$1`, `$2`, … in order, typed where the query fixes their type (`Null`
    /// where it does not).
    pub fn parameter_schema(&self) -> Result<SchemaRef> {
        let types = self.frame.logical_plan().get_parameter_types()?;
        let mut ids: Vec<(usize, String, Option<DataType>)> = types
            .into_iter()
            .map(|(id, t)| {
                let position = id.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                (position, id, t)
            })
            .collect();
        ids.sort();
        Ok(Arc::new(Schema::new(
            ids.into_iter()
                .map(|(_, id, t)| Field::new(id, t.unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        )))
    }

    /// The statement with its placeholders replaced by the values of the one row of
    /// `parameters`, column `i` for `$i+1`.
    pub fn bind(self, parameters: &RecordBatch) -> Result<Self> {
        if parameters.num_rows() != 1 {
            return Err(QueryError::bad_request(format!(
                "parameters must be one row, got {}",
                parameters.num_rows()
            )));
        }
        let values = parameters
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            frame: self.frame.with_param_values(ParamValues::from(values))?,
        })
    }

    /// Starts the query: a stream of its batches, computed as they are read.
    pub async fn execute(self) -> Result<SendableRecordBatchStream> {
        // A statement planned in one request may run in another (Flight SQL's GetFlightInfo,
        // then DoGet): the shards its scans leave out are the running request's to report.
        let (mut state, plan) = self.frame.into_parts();
        if state.config().get_extension::<PartialShards>().is_some() {
            state
                .config_mut()
                .set_extension(super::cluster::current_partial_record());
        }
        Ok(DataFrame::new(state, plan).execute_stream().await?)
    }
}

impl QueryEngine {
    /// Plans one SQL query for `tenant`; DDL, DML, statements and file access are refused.
    pub async fn plan_sql(&self, tenant: &str, sql: &str) -> Result<Statement> {
        let ctx = self.sql_session(tenant)?;
        let mut frame = ctx.sql_with_options(sql, options()).await?;
        if self.cluster.is_some() {
            frame = super::cluster::with_distributed_explain(&ctx, frame).await?;
        }
        Ok(Statement { frame })
    }

    /// Runs one SQL query for `tenant` and collects the result.
    pub async fn sql(&self, tenant: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let statement = self.plan_sql(tenant, sql).await?;
        let schema = statement.schema();
        let batches = statement.frame.collect().await?;
        Ok((schema, batches))
    }

    /// The tables `tenant`'s SQL can read, including `information_schema`'s views, by catalog,
    /// schema and name, as the tenant's `information_schema.tables` lists them.
    pub async fn tables(&self, tenant: &str) -> Result<Vec<TableInfo>> {
        let ctx = self.sql_session(tenant)?;
        let listing = ctx
            .sql_with_options(
                "SELECT table_catalog, table_schema, table_name, table_type \
                 FROM information_schema.tables \
                 ORDER BY table_catalog, table_schema, table_name",
                options(),
            )
            .await?
            .collect()
            .await?;
        let mut out = Vec::new();
        for batch in &listing {
            let column = |i: usize| batch.column(i).as_string::<i32>();
            let (catalogs, schemas, names, types) = (column(0), column(1), column(2), column(3));
            for row in 0..batch.num_rows() {
                let (catalog, schema, name) =
                    (catalogs.value(row), schemas.value(row), names.value(row));
                let table = ctx
                    .table(TableReference::full(catalog, schema, name))
                    .await?;
                out.push(TableInfo {
                    catalog: catalog.to_string(),
                    schema: schema.to_string(),
                    name: name.to_string(),
                    table_type: if types.value(row) == "VIEW" {
                        "VIEW"
                    } else {
                        "TABLE"
                    },
                    arrow_schema: Arc::new(table.schema().as_arrow().clone()),
                });
            }
        }
        Ok(out)
    }
}
