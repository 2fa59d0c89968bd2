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
//!
//! Receivers count what they accept and refuse in [`crate::telemetry`]; they never query.

pub mod grpc;
pub mod http;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::ingester::{Ingester, IngesterError};
use crate::schema::otlp::{OtlpError, span_count, spans_from_request};
use crate::telemetry::Telemetry;
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

    /// The refusal as the `outcome` / `reason` label of the ingest metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Decode(_) | IngestError::Invalid(_) => "invalid",
            IngestError::ContentType(_) => "unsupported_content_type",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::Tenant(TenantError::Missing) => "missing_tenant",
            IngestError::Tenant(TenantError::Invalid(_)) => "invalid_tenant",
            IngestError::Unavailable(_) => "unavailable",
        }
    }
}

/// The receiver an export arrived through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    OtlpGrpc,
    OtlpHttp,
    /// The synthetic traffic of `serve --demo`, which takes the receiver's path in-process.
    Demo,
}

impl Transport {
    /// The `transport` label of the ingest metrics.
    pub fn label(self) -> &'static str {
        match self {
            Transport::OtlpGrpc => "otlp_grpc",
            Transport::OtlpHttp => "otlp_http",
            Transport::Demo => "demo",
        }
    }
}

/// What receivers share.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub ingester: Arc<Ingester>,
    pub multitenancy: bool,
    pub max_request_bytes: usize,
    /// Where receivers count requests, spans and bytes.
    pub telemetry: Telemetry,
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

    /// [`Receiver::export`] for a request of `bytes` uncompressed payload bytes that arrived over
    /// `transport`, counted in the ingest metrics.
    pub async fn receive(
        &self,
        transport: Transport,
        bytes: usize,
        org_id: Option<&str>,
        request: &ExportTraceServiceRequest,
    ) -> Result<usize, IngestError> {
        let result = self.export(org_id, request).await;
        match &result {
            Ok(spans) => self
                .telemetry
                .ingest_accepted(transport.label(), bytes, *spans),
            Err(e) => self.telemetry.ingest_refused(
                transport.label(),
                e.reason(),
                bytes,
                span_count(request),
            ),
        }
        result
    }

    /// Counts a request refused before it could be decoded.
    pub fn refused_undecoded(&self, transport: Transport, error: &IngestError) {
        self.telemetry
            .ingest_refused(transport.label(), error.reason(), 0, 0);
    }
}
