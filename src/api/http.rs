//! SQL over HTTP on the HTTP port (Arrow IPC stream results), run by [`crate::query`]. Tempo's
//! endpoints on the same port live in the `tempo` module, above this one.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::query::{QueryEngine, QueryError, Result};
use crate::tenant::{self, ORG_ID_HEADER};

/// Path of the SQL endpoint: POST the query text, receive an Arrow IPC stream.
pub const SQL_PATH: &str = "/api/v1/sql";
/// Content type of Arrow IPC stream responses.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub engine: QueryEngine,
    pub multitenancy: bool,
}

/// Routes of the HTTP API.
pub fn router(state: ApiState) -> Router {
    Router::new().route(SQL_PATH, post(sql)).with_state(state)
}

async fn sql(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    run_sql(&state, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run_sql(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<Response> {
    let org_id = headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
    let tenant = tenant::resolve(org_id, state.multitenancy)?;
    let query = std::str::from_utf8(body)
        .map_err(|_| QueryError::bad_request("the SQL text must be UTF-8"))?;
    let (schema, batches) = state.engine.sql(&tenant, query).await?;
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], out).into_response())
}
