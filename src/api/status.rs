//! The one mapping of a query's [`ErrorKind`] to each transport's status: HTTP status code
//! and gRPC code. Every endpoint answers a failed query through these functions, so the same
//! failure reads the same on every interface.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::query::{ErrorKind, QueryError};

/// The HTTP status of a failure of `kind`, as Tempo answers.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::TooLarge => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Limit => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code of a failure of `kind`, as Tempo answers.
pub fn grpc_code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::BadRequest | ErrorKind::TooLarge => tonic::Code::InvalidArgument,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::Limit => tonic::Code::ResourceExhausted,
        ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

/// A failed query as a gRPC status.
pub fn grpc_status(error: &QueryError) -> tonic::Status {
    tonic::Status::new(grpc_code(error.kind), error.message.clone())
}

/// A plain-text HTTP response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A failed query as an HTTP response: the message as plain text. A missing tenant ends with
/// a newline, as Go's `http.Error` writes Tempo's `no org id`.
pub fn http_response(error: &QueryError) -> Response {
    let body = match error.kind {
        ErrorKind::Unauthenticated => format!("{}\n", error.message),
        _ => error.message.clone(),
    };
    text(http_status(error.kind), body)
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        http_response(&self)
    }
}
