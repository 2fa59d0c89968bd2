//! OTLP receivers for the three signals: gRPC `TraceService`, `LogsService` and
//! `MetricsService` `Export`, and HTTP `POST /v1/traces`, `/v1/logs` and `/v1/metrics`.
//!
//! Each decodes, validates (see [`crate::schema::otlp`]), resolves the tenant and hands the rows
//! to the ingester, answering only once they are durable. An export lands whole or not at
//! all. Refusals name the problem:
//!
//! | problem | HTTP | gRPC |
//! |---|---|---|
//! | body not decodable, invalid ids | 400 | `InvalidArgument` |
//! | content type other than protobuf / JSON | 415 | — |
//! | body over `max_request_bytes` (after gunzip) | 413 | `ResourceExhausted` |
//! | tenant at its live limit (nothing written) | 429 | `ResourceExhausted` |
//! | missing or invalid tenant (multitenancy on) | 401 / 400 | `Unauthenticated` / `InvalidArgument` |
//! | WAL or storage failure | 503 | `Unavailable` |
//!
//! Receivers count what they accept and refuse in [`crate::telemetry`]; they never query.

pub mod distributor;
pub mod grpc;
pub mod http;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::ingester::{Ingester, IngesterError};
use crate::schema::otlp::{self, OtlpError};
use crate::schema::{LogRow, PointRow, Signal, SpanRow};
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
    #[error("{0}")]
    LiveLimit(String),
    #[error("could not store the data, retry later: {0}")]
    Unavailable(IngesterError),
    #[error("could not store the data on enough replicas, retry later: {0}")]
    Replication(String),
}

impl From<IngesterError> for IngestError {
    fn from(e: IngesterError) -> Self {
        match e {
            IngesterError::LiveLimit { .. } => IngestError::LiveLimit(e.to_string()),
            other => IngestError::Unavailable(other),
        }
    }
}

impl IngestError {
    /// The gRPC status code of this refusal; OTLP/HTTP error bodies carry it too.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::Decode(_) | IngestError::Invalid(_) | IngestError::ContentType(_) => {
                tonic::Code::InvalidArgument
            }
            IngestError::TooLarge { .. } | IngestError::LiveLimit(_) => {
                tonic::Code::ResourceExhausted
            }
            IngestError::Tenant(TenantError::Missing) => tonic::Code::Unauthenticated,
            IngestError::Tenant(TenantError::Invalid(_)) => tonic::Code::InvalidArgument,
            IngestError::Unavailable(_) | IngestError::Replication(_) => tonic::Code::Unavailable,
        }
    }

    /// The refusal as the `outcome` / `reason` label of the ingest metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Decode(_) | IngestError::Invalid(_) => "invalid",
            IngestError::ContentType(_) => "unsupported_content_type",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::LiveLimit(_) => "live_limit",
            IngestError::Tenant(TenantError::Missing) => "missing_tenant",
            IngestError::Tenant(TenantError::Invalid(_)) => "invalid_tenant",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Replication(_) => "replication",
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
    /// In a cluster, sends rows to the holders of their shards instead of `ingester` alone.
    pub distributor: Option<distributor::Distributor>,
}

/// Rows of one signal, converted from an export request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Rows {
    Spans(Vec<SpanRow>),
    Logs(Vec<LogRow>),
    Points(Vec<PointRow>),
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Spans(rows) => rows.len(),
            Rows::Logs(rows) => rows.len(),
            Rows::Points(rows) => rows.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An OTLP export request of one signal.
pub trait Export: prost::Message + Default + serde::de::DeserializeOwned + 'static {
    /// The signal the request carries.
    const SIGNAL: Signal;
    /// Number of spans, log records or points in the request.
    fn count(&self) -> usize;
    /// The request's rows; fails on the first invalid one.
    fn rows(&self) -> Result<Rows, OtlpError>;
}

impl Export for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
    fn count(&self) -> usize {
        otlp::span_count(self)
    }
    fn rows(&self) -> Result<Rows, OtlpError> {
        otlp::spans_from_request(self).map(Rows::Spans)
    }
}

impl Export for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    fn count(&self) -> usize {
        otlp::log_count(self)
    }
    fn rows(&self) -> Result<Rows, OtlpError> {
        otlp::logs_from_request(self).map(Rows::Logs)
    }
}

impl Export for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;
    fn count(&self) -> usize {
        otlp::point_count(self)
    }
    fn rows(&self) -> Result<Rows, OtlpError> {
        otlp::points_from_request(self).map(Rows::Points)
    }
}

impl Receiver {
    /// Validates and stores one export for the tenant named by `org_id`; returns how many
    /// spans, records or points it stored.
    pub async fn export<R: Export>(
        &self,
        org_id: Option<&str>,
        request: &R,
    ) -> Result<usize, IngestError> {
        let tenant = crate::tenant::resolve(org_id, self.multitenancy)?;
        if let Some(distributor) = &self.distributor {
            return distributor
                .distribute(&self.ingester, &tenant, request.rows()?)
                .await;
        }
        let stored = match request.rows()? {
            Rows::Spans(rows) => self.ingester.push(&tenant, rows).await?,
            Rows::Logs(rows) => self.ingester.push_logs(&tenant, rows).await?,
            Rows::Points(rows) => self.ingester.push_points(&tenant, rows).await?,
        };
        Ok(stored)
    }

    /// [`Receiver::export`] for a request of `bytes` uncompressed payload bytes that arrived over
    /// `transport`, counted in the ingest metrics.
    pub async fn receive<R: Export>(
        &self,
        transport: Transport,
        bytes: usize,
        org_id: Option<&str>,
        request: &R,
    ) -> Result<usize, IngestError> {
        let result = self.export(org_id, request).await;
        let (telemetry, transport) = (&self.telemetry, transport.label());
        match (&result, R::SIGNAL) {
            (Ok(spans), Signal::Traces) => telemetry.ingest_accepted(transport, bytes, *spans),
            (Ok(records), signal) => {
                telemetry.ingest_records_accepted(signal.name(), transport, bytes, *records)
            }
            (Err(e), Signal::Traces) => {
                telemetry.ingest_refused(transport, e.reason(), bytes, request.count())
            }
            (Err(e), signal) => telemetry.ingest_records_refused(
                signal.name(),
                transport,
                e.reason(),
                bytes,
                request.count(),
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
