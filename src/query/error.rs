//! The one error type of every query: a [`ErrorKind`] saying whose fault it is and what a
//! client may do about it, and a message saying once what was wrong.
//!
//! Each transport maps the kind exactly once (`api::status`: HTTP status, gRPC code, Flight
//! status). Messages are written where the fault is found and never wrapped again: a TraceQL
//! parse error reads `invalid TraceQL query: parse error at line 1, col 5: …` on every
//! interface.

use datafusion::error::DataFusionError;

use crate::ids::TraceIdError;
use crate::tenant::TenantError;
use crate::time::WindowError;
use crate::traceql::CheckError;

/// What kind of failure a [`QueryError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something invalid: the client's to fix.
    BadRequest,
    /// No tenant was named while multitenancy is on.
    Unauthenticated,
    /// The thing asked for does not exist.
    NotFound,
    /// The answer is larger than allowed.
    TooLarge,
    /// A resource limit (memory, concurrency) stopped the query.
    Limit,
    /// The query ran past its deadline.
    Timeout,
    /// A component the query needs is not available now; retrying may help.
    Unavailable,
    /// Anything else: a fault of spanlake's.
    Internal,
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// Whose fault it is.
    pub kind: ErrorKind,
    /// What was wrong, for the client.
    pub message: String,
}

/// A query's result.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The client asked for something invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// A fault of spanlake's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The query ran past its deadline; the message is Tempo's.
    pub fn timeout() -> Self {
        Self::new(ErrorKind::Timeout, "context deadline exceeded")
    }

    /// A TraceQL query the checker refused, or that cannot be run: every interface says
    /// `invalid TraceQL query: ` and then what is wrong.
    pub fn invalid_traceql(what: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("invalid TraceQL query: {what}"))
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        let message = e.strip_backtrace();
        let kind = match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => ErrorKind::BadRequest,
            DataFusionError::ResourcesExhausted(_) => ErrorKind::Limit,
            DataFusionError::External(e)
                if e.downcast_ref::<crate::tables::ShardsUnavailable>()
                    .is_some() =>
            {
                ErrorKind::Unavailable
            }
            DataFusionError::ParquetError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_) => ErrorKind::Internal,
            // Errors raised while evaluating user expressions (a bad id literal, a division by
            // zero) surface as execution errors but are the query's fault.
            DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
                ErrorKind::BadRequest
            }
            _ => ErrorKind::Internal,
        };
        let message = match kind {
            ErrorKind::Limit => format!("query exceeded the memory limit: {message}"),
            ErrorKind::Internal => format!("query failed: {message}"),
            _ => message,
        };
        Self::new(kind, message)
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for QueryError {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<arrow::error::ArrowError> for QueryError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::internal(e.to_string())
    }
}

impl From<CheckError> for QueryError {
    fn from(e: CheckError) -> Self {
        Self::invalid_traceql(e)
    }
}

impl From<TenantError> for QueryError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Missing => Self::new(ErrorKind::Unauthenticated, e.to_string()),
            TenantError::Invalid(_) => Self::bad_request(e.to_string()),
        }
    }
}

impl From<WindowError> for QueryError {
    fn from(e: WindowError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<TraceIdError> for QueryError {
    fn from(e: TraceIdError) -> Self {
        Self::bad_request(e.to_string())
    }
}
