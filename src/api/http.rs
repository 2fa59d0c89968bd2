//! SQL over HTTP on the HTTP port (Arrow IPC stream results). Tempo's endpoints beside it are
//! in [`crate::tempo::http`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::query::{QueryEngine, QueryError};
use crate::tenant::{self, ORG_ID_HEADER, TenantError};

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

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

async fn sql(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let org_id = headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
    let tenant = match tenant::resolve(org_id, state.multitenancy) {
        Ok(t) => t,
        Err(e @ TenantError::Missing) => return error(StatusCode::UNAUTHORIZED, e.to_string()),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Ok(query) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the SQL text must be UTF-8".into());
    };
    match state.engine.sql(&tenant, query).await {
        Ok((schema, batches)) => {
            let mut out = Vec::new();
            let written = (|| {
                let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
                for batch in &batches {
                    writer.write(batch)?;
                }
                writer.finish()
            })();
            match written {
                Ok(()) => ([(header::CONTENT_TYPE, ARROW_STREAM)], out).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Err(e @ QueryError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ QueryError::ResourcesExhausted(_)) => {
            error(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        Err(e @ QueryError::Execution(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
