//! OTLP trace receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces`.
//!
//! Both decode, validate (see [`crate::schema::otlp`]), resolve the tenant and hand the spans
//! to the ingester, answering only once the spans are durable. Refusals name the problem:
//!
//! | problem | HTTP | gRPC |
//! |---|---|---|
//! | body not decodable, invalid ids | 400 | `InvalidArgument` |
//! | content type other than protobuf / JSON | 415 | — |
//! | body over `max_request_bytes` (after gunzip) | 413 | `ResourceExhausted` |
//! | missing or invalid tenant (multitenancy on) | 401 / 400 | `Unauthenticated` / `InvalidArgument` |
//! | WAL or storage failure | 503 | `Unavailable` |

pub mod grpc;
pub mod http;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::ingester::{Ingester, IngesterError};
use crate::schema::otlp::{OtlpError, spans_from_request};
use crate::tenant::TenantError;

/// Why an export was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid OTLP payload: {0}")]
    Decode(String),
    #[error("invalid OTLP payload: {0}")]
    Invalid(#[from] OtlpError),
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    ContentType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("could not store the spans, retry later: {0}")]
    Unavailable(#[from] IngesterError),
}

impl IngestError {
    /// The gRPC status code of this refusal; OTLP/HTTP error bodies carry it too.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::Decode(_) | IngestError::Invalid(_) | IngestError::ContentType(_) => {
                tonic::Code::InvalidArgument
            }
            IngestError::TooLarge { .. } => tonic::Code::ResourceExhausted,
            IngestError::Tenant(TenantError::Missing) => tonic::Code::Unauthenticated,
            IngestError::Tenant(TenantError::Invalid(_)) => tonic::Code::InvalidArgument,
            IngestError::Unavailable(_) => tonic::Code::Unavailable,
        }
    }
}

/// What receivers share.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub ingester: Arc<Ingester>,
    pub multitenancy: bool,
    pub max_request_bytes: usize,
}

impl Receiver {
    /// Validates and stores one export for the tenant named by `org_id`.
    pub async fn export(
        &self,
        org_id: Option<&str>,
        request: &ExportTraceServiceRequest,
    ) -> Result<usize, IngestError> {
        let tenant = crate::tenant::resolve(org_id, self.multitenancy)?;
        let spans = spans_from_request(request)?;
        Ok(self.ingester.push(&tenant, spans).await?)
    }
}
