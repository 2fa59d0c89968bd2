//! OTLP/gRPC `TraceService`, `LogsService` and `MetricsService`.

use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{Export, IngestError, Receiver, Transport};
use crate::tenant::ORG_ID_HEADER;

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        Status::new(e.grpc_code(), e.to_string())
    }
}

impl Receiver {
    /// Stores one gRPC export with the tenant of its metadata.
    async fn grpc_export<R: Export>(&self, request: Request<R>) -> Result<(), Status> {
        let org_id = request
            .metadata()
            .get(ORG_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = request.get_ref().encoded_len();
        self.receive(
            Transport::OtlpGrpc,
            bytes,
            org_id.as_deref(),
            request.get_ref(),
        )
        .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.grpc_export(request).await?;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.grpc_export(request).await?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.grpc_export(request).await?;
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The three gRPC services, accepting gzip and refusing messages over the receiver's limit.
pub struct Services {
    pub traces: SizeLimitStatus<TraceServiceServer<Receiver>>,
    pub logs: SizeLimitStatus<LogsServiceServer<Receiver>>,
    pub metrics: SizeLimitStatus<MetricsServiceServer<Receiver>>,
}

/// The gRPC services of `receiver`.
pub fn services(receiver: Receiver) -> Services {
    let limit = receiver.max_request_bytes;
    let gzip = CompressionEncoding::Gzip;
    Services {
        traces: SizeLimitStatus {
            inner: TraceServiceServer::new(receiver.clone())
                .accept_compressed(gzip)
                .send_compressed(gzip)
                .max_decoding_message_size(limit),
        },
        logs: SizeLimitStatus {
            inner: LogsServiceServer::new(receiver.clone())
                .accept_compressed(gzip)
                .send_compressed(gzip)
                .max_decoding_message_size(limit),
        },
        metrics: SizeLimitStatus {
            inner: MetricsServiceServer::new(receiver)
                .accept_compressed(gzip)
                .send_compressed(gzip)
                .max_decoding_message_size(limit),
        },
    }
}

/// Reports tonic's "message too large" refusal as `RESOURCE_EXHAUSTED`, the code gRPC assigns
/// to exceeded size limits (tonic itself answers `OUT_OF_RANGE`).
#[derive(Debug, Clone)]
pub struct SizeLimitStatus<S> {
    inner: S,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for SizeLimitStatus<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for SizeLimitStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
                && headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
            if too_large {
                headers.insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            Ok(response)
        })
    }
}
