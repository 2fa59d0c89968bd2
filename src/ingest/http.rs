//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs` and `/v1/metrics` with protobuf or JSON bodies,
//! optionally gzip-compressed.

use std::io::Read;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;

use super::{Export, IngestError, Receiver, Transport};
use crate::tenant::{ORG_ID_HEADER, TenantError};

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";
/// The OTLP/HTTP logs path.
pub const LOGS_PATH: &str = "/v1/logs";
/// The OTLP/HTTP metrics path.
pub const METRICS_PATH: &str = "/v1/metrics";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Routes of the OTLP/HTTP receiver.
pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route(
            TRACES_PATH,
            post(export::<ExportTraceServiceRequest, ExportTraceServiceResponse>),
        )
        .route(
            LOGS_PATH,
            post(export::<ExportLogsServiceRequest, ExportLogsServiceResponse>),
        )
        .route(
            METRICS_PATH,
            post(export::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver)
}

fn format_of(headers: &HeaderMap) -> Result<Format, IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        PROTOBUF | "application/protobuf" => Ok(Format::Protobuf),
        JSON => Ok(Format::Json),
        _ => Err(IngestError::ContentType(content_type.to_string())),
    }
}

/// Handles one export of request type `R`, answering with an empty response of type `A`.
async fn export<R, A>(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response
where
    R: Export + Send + Sync,
    A: Message + Serialize + Default,
{
    let format = format_of(&headers).unwrap_or(Format::Protobuf);
    match handle::<R>(&receiver, &headers, body).await {
        Ok(()) => encode(format, StatusCode::OK, &A::default()),
        Err(e) => {
            let body = RpcStatus {
                code: e.grpc_code() as i32,
                message: e.to_string(),
            };
            let status = status_of(&e);
            match format {
                Format::Protobuf => (
                    status,
                    [(header::CONTENT_TYPE, PROTOBUF)],
                    body.encode_to_vec(),
                )
                    .into_response(),
                Format::Json => (status, axum::Json(body)).into_response(),
            }
        }
    }
}

fn status_of(e: &IngestError) -> StatusCode {
    match e {
        IngestError::Decode(_) | IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
        IngestError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IngestError::LiveLimit(_) => StatusCode::TOO_MANY_REQUESTS,
        IngestError::Tenant(TenantError::Missing) => StatusCode::UNAUTHORIZED,
        IngestError::Tenant(TenantError::Invalid(_)) => StatusCode::BAD_REQUEST,
        IngestError::Unavailable(_) | IngestError::Replication(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn encode(format: Format, status: StatusCode, response: &(impl Message + Serialize)) -> Response {
    match format {
        Format::Protobuf => (
            status,
            [(header::CONTENT_TYPE, PROTOBUF)],
            response.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (status, axum::Json(response)).into_response(),
    }
}

async fn handle<R: Export + Send + Sync>(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), IngestError> {
    let (request, bytes) = decode::<R>(receiver.max_request_bytes, headers, body)
        .await
        .inspect_err(|e| receiver.refused_undecoded(Transport::OtlpHttp, e))?;
    let org_id = headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
    receiver
        .receive(Transport::OtlpHttp, bytes, org_id, &request)
        .await?;
    Ok(())
}

/// Reads, gunzips and decodes a body of at most `limit` bytes; returns the request and its
/// uncompressed size.
async fn decode<R: Export>(
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<(R, usize), IngestError> {
    let format = format_of(headers)?;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if exceeded_limit(&e) {
            IngestError::TooLarge { limit }
        } else {
            IngestError::Decode(format!("reading the body: {e}"))
        }
    })?;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let bytes = if gzip { gunzip(&raw, limit)? } else { raw };
    let size = bytes.len();
    let request = match format {
        Format::Protobuf => {
            R::decode(bytes).map_err(|e| IngestError::Decode(format!("protobuf: {e}")))?
        }
        Format::Json => {
            serde_json::from_slice(&bytes).map_err(|e| IngestError::Decode(format!("JSON: {e}")))?
        }
    };
    Ok((request, size))
}

/// True when reading a body failed because it was longer than the limit.
fn exceeded_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Decompresses at most `limit` bytes, so a small compressed body cannot expand without bound.
fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Decode(format!("gzip: {e}")))?;
    if out.len() > limit {
        return Err(IngestError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}
