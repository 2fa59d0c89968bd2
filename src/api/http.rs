//! SQL over HTTP on the HTTP port, run by [`crate::query`]: POST the query text, receive the
//! answer batch by batch as it is computed, as an Arrow IPC stream (the default), JSON lines
//! (`Accept: application/x-ndjson`) or CSV (`Accept: text/csv`). Errors found before the first
//! batch are a status with the message; an error after it ends the body early. Tempo's
//! endpoints on the same port live in the `tempo` module, above this one.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;

use crate::cluster::Cluster;
use crate::query::{QueryEngine, QueryError, Result};
use crate::report::{self, ReportOptions, scheduled};
use crate::storage::Storage;
use crate::tenant::{self, ORG_ID_HEADER};

/// Path of the SQL endpoint: POST the query text, receive an Arrow IPC stream.
pub const SQL_PATH: &str = "/api/v1/sql";
/// Path of anomaly reports: POST the options as JSON, receive the report (`?format=json`,
/// `md` or `html`).
pub const REPORT_PATH: &str = "/api/v1/report";
/// Path listing the outputs of scheduled reports.
pub const REPORTS_PATH: &str = "/api/v1/reports";
/// Path of one output of a scheduled report.
pub const STORED_REPORT_PATH: &str = "/api/v1/reports/{name}/{file}";
/// Path of the cluster's members, their state and the shards they hold, as JSON.
pub const CLUSTER_PATH: &str = "/api/v1/cluster";
/// Path of a trace with its log records and exemplars, as JSON.
pub const CORRELATED_PATH: &str = "/api/v1/traces/{id}/correlated";
/// Content type of Arrow IPC stream responses.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Content type of JSON lines responses: one object per row.
pub const JSON_LINES: &str = "application/x-ndjson";
/// Content type of CSV responses, with a header row.
pub const CSV: &str = "text/csv";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Runs the queries.
    pub engine: QueryEngine,
    /// Whether requests must name their tenant.
    pub multitenancy: bool,
    /// Where scheduled reports are written.
    pub storage: Storage,
    /// The cluster this node is a member of, if any.
    pub cluster: Option<std::sync::Arc<Cluster>>,
}

/// Routes of the HTTP API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(SQL_PATH, post(sql))
        .route(CORRELATED_PATH, get(correlated))
        .route(REPORT_PATH, post(report))
        .route(REPORTS_PATH, get(stored_reports))
        .route(STORED_REPORT_PATH, get(stored_report))
        .route(CLUSTER_PATH, get(cluster_status))
        .route(crate::cluster::HANDOFF_PATH, get(cluster_handoff))
        .with_state(state)
}

/// The format an answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Arrow,
    JsonLines,
    Csv,
}

impl Format {
    fn from_accept(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains(JSON_LINES) || accept.contains("application/jsonl") {
            Format::JsonLines
        } else if accept.contains(CSV) {
            Format::Csv
        } else {
            Format::Arrow
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Arrow => ARROW_STREAM,
            Format::JsonLines => JSON_LINES,
            Format::Csv => CSV,
        }
    }
}

/// Writes batches of one answer, each into the bytes it adds to the body.
enum Encoder {
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
    JsonLines,
    Csv { header: bool },
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef) -> std::result::Result<Self, ArrowError> {
        Ok(match format {
            Format::Arrow => Encoder::Arrow(Box::new(arrow::ipc::writer::StreamWriter::try_new(
                Vec::new(),
                schema,
            )?)),
            Format::JsonLines => Encoder::JsonLines,
            Format::Csv => Encoder::Csv { header: true },
        })
    }

    /// The bytes written so far and not yet sent (the IPC schema message, at the start).
    fn pending(&mut self) -> Vec<u8> {
        match self {
            Encoder::Arrow(writer) => std::mem::take(writer.get_mut()),
            _ => Vec::new(),
        }
    }

    fn batch(&mut self, batch: &RecordBatch) -> std::result::Result<Vec<u8>, ArrowError> {
        match self {
            Encoder::Arrow(writer) => {
                writer.write(batch)?;
                Ok(std::mem::take(writer.get_mut()))
            }
            Encoder::JsonLines => {
                let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                Ok(writer.into_inner())
            }
            Encoder::Csv { header } => {
                let mut out = Vec::new();
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(&mut out);
                writer.write(batch)?;
                drop(writer);
                *header = false;
                Ok(out)
            }
        }
    }

    fn finish(&mut self) -> std::result::Result<Vec<u8>, ArrowError> {
        match self {
            Encoder::Arrow(writer) => {
                writer.finish()?;
                Ok(std::mem::take(writer.get_mut()))
            }
            _ => Ok(Vec::new()),
        }
    }
}

async fn correlated(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let org_id = headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
        let tenant = tenant::resolve(org_id, state.multitenancy)?;
        let id = crate::ids::parse_trace_id(&id)?;
        state.engine.correlate(&tenant, id).await
    };
    match answer.await {
        Ok(correlation) => axum::Json(correlation).into_response(),
        Err(e) => e.into_response(),
    }
}

fn request_tenant(state: &ApiState, headers: &HeaderMap) -> Result<String> {
    let org_id = headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
    Ok(tenant::resolve(org_id, state.multitenancy)?)
}

/// `?format=` of a report request.
#[derive(Debug, serde::Deserialize)]
struct ReportFormat {
    format: Option<report::Format>,
}

async fn report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Query(format): axum::extract::Query<ReportFormat>,
    body: Bytes,
) -> Response {
    let answer = async {
        let tenant = request_tenant(&state, &headers)?;
        let options: ReportOptions = if body.iter().all(u8::is_ascii_whitespace) {
            ReportOptions::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                QueryError::bad_request(format!("the report options are not valid JSON: {e}"))
            })?
        };
        let format = format.format.unwrap_or(report::Format::Json);
        let made = report::run(&state.engine, &tenant, &options, crate::time::now_ns())
            .await
            .map_err(QueryError::from)?;
        let body = format.render(&made).map_err(QueryError::from)?;
        Ok::<_, QueryError>(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn stored_reports(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let answer = async {
        let tenant = request_tenant(&state, &headers)?;
        let listed = scheduled::list(&state.storage, &tenant)
            .await
            .map_err(|e| QueryError::internal(format!("listing reports: {e}")))?;
        Ok::<_, QueryError>(axum::Json(serde_json::json!({ "reports": listed })).into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn stored_report(
    State(state): State<ApiState>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let tenant = request_tenant(&state, &headers)?;
        let bytes = scheduled::read(&state.storage, &tenant, &name, &file)
            .await
            .map_err(|e| QueryError::internal(format!("reading report {name}/{file}: {e}")))?
            .ok_or_else(|| {
                QueryError::new(
                    crate::query::ErrorKind::NotFound,
                    format!("no report output {name}/{file}"),
                )
            })?;
        let kind = file
            .rsplit_once('.')
            .and_then(|(_, extension)| report::Format::from_name(extension))
            .unwrap_or(report::Format::Json)
            .content_type();
        Ok::<_, QueryError>(([(header::CONTENT_TYPE, kind)], bytes).into_response())
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
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
    let format = Format::from_accept(headers);
    let statement = state.engine.plan_sql(&tenant, query).await?;
    let mut encoder = Encoder::new(format, &statement.schema())?;
    let mut batches = statement.execute().await?;
    // The first batch decides the status: an error before it is the query's answer.
    let first = match batches.next().await {
        Some(Err(e)) => return Err(QueryError::from(e)),
        first => first,
    };
    let mut head = encoder.pending();
    match &first {
        Some(Ok(batch)) => head.extend(encoder.batch(batch)?),
        // An empty answer: the header, then the end.
        _ => head.extend(encoder.finish()?),
    }
    let rest = futures::stream::unfold(
        (batches, encoder, first.is_none()),
        |(mut batches, mut encoder, done)| async move {
            if done {
                return None;
            }
            let chunk = match batches.next().await {
                Some(Ok(batch)) => encoder.batch(&batch),
                Some(Err(e)) => Err(ArrowError::ExternalError(Box::new(e))),
                None => {
                    let end = encoder.finish();
                    return Some((end.map(Bytes::from), (batches, encoder, true)));
                }
            };
            let failed = chunk.is_err();
            Some((chunk.map(Bytes::from), (batches, encoder, failed)))
        },
    );
    let chunks = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    let body = Body::from_stream(chunks.map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// `GET /api/v1/cluster/handoff`: the marks and deliveries of hints this member knows, which
/// the other members read with each health check.
async fn cluster_handoff(State(state): State<ApiState>) -> Response {
    match &state.cluster {
        Some(cluster) => axum::Json(cluster.handoff().state()).into_response(),
        None => (
            http::StatusCode::NOT_FOUND,
            "this node runs alone: its configuration has no [cluster] section\n",
        )
            .into_response(),
    }
}

/// `GET /api/v1/cluster`: members, their state as this node sees it, and shard placement.
async fn cluster_status(State(state): State<ApiState>) -> Response {
    match &state.cluster {
        Some(cluster) => axum::Json(cluster.status()).into_response(),
        None => (
            http::StatusCode::NOT_FOUND,
            "this node runs alone: its configuration has no [cluster] section\n",
        )
            .into_response(),
    }
}
