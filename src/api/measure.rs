//! The tower layer that measures every HTTP and gRPC request into
//! `spanlake_request_duration_seconds` of [`Telemetry`].
//!
//! It reads transport details the telemetry module must not know: `route` is axum's route
//! template (never the raw path), or the gRPC method path for methods the server implements,
//! and `other` for everything else; `method` is the HTTP method, or `gRPC`; `status_code` is the
//! HTTP status, or the gRPC status name taken from the headers or the trailers. A request is
//! recorded when its response body is done, or as abandoned (`499`, gRPC `CANCELLED`) when the
//! response is dropped before that.

use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, header};
use http_body_util::BodyExt;

use crate::telemetry::Telemetry;

/// The `route` label of requests no route template matched.
const OTHER: &str = "other";

/// The tower layer measuring requests into `spanlake_request_duration_seconds`; works on an
/// axum `Router` (labels by `MatchedPath`) and on a tonic transport server alike.
#[derive(Debug, Clone)]
pub struct MeasureLayer {
    telemetry: Telemetry,
}

impl MeasureLayer {
    /// A layer recording into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> tower::Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

/// The service [`MeasureLayer`] wraps around each route or gRPC server.
#[derive(Debug, Clone)]
pub struct Measure<S> {
    inner: S,
    telemetry: Telemetry,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for Measure<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut observation = Observation::start(self.telemetry.clone(), &request);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            observation.responded(response.status().as_u16(), response.headers());
            // The observation travels with the body and is recorded when the body is done.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    if let Some(trailers) = frame.trailers_ref() {
                        observation.trailers(trailers);
                    }
                    frame
                }))
            }))
        })
    }
}

/// One request being measured; recorded when dropped, that is when its response body is done
/// or the request was abandoned. Abandoned requests count as status `499` (HTTP, nginx's
/// "client closed request") or `CANCELLED` (gRPC).
struct Observation {
    telemetry: Telemetry,
    start: Instant,
    /// The route template for HTTP, the method path for gRPC.
    route: String,
    method: &'static str,
    grpc: bool,
    status: Option<String>,
}

impl Observation {
    fn start<B>(telemetry: Telemetry, request: &http::Request<B>) -> Self {
        let grpc = is_grpc(request.headers());
        let route = if grpc {
            request.uri().path().to_string()
        } else {
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or(OTHER, MatchedPath::as_str)
                .to_string()
        };
        Self {
            telemetry,
            start: Instant::now(),
            route,
            method: if grpc {
                "gRPC"
            } else {
                method_label(request.method())
            },
            grpc,
            status: None,
        }
    }

    /// Takes the HTTP status, or a gRPC status sent without a body (trailers-only response).
    fn responded(&mut self, status: u16, headers: &HeaderMap) {
        self.status = if self.grpc {
            headers.get("grpc-status").map(grpc_code_name)
        } else {
            Some(status.to_string())
        };
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc
            && let Some(code) = trailers.get("grpc-status")
        {
            self.status = Some(grpc_code_name(code));
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        let cancelled = if self.grpc { "CANCELLED" } else { "499" };
        let status = self.status.as_deref().unwrap_or(cancelled);
        // Only methods the server implements get their own series.
        let route = if self.grpc && status == "UNIMPLEMENTED" {
            OTHER
        } else {
            &self.route
        };
        self.telemetry
            .observe_request(route, self.method, status, seconds);
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The method as a label: the standard methods by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or(OTHER)
}

/// A `grpc-status` value by its canonical name (`OK`, `NOT_FOUND`, …).
fn grpc_code_name(value: &http::HeaderValue) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|code| NAMES.get(code))
        .unwrap_or(&"UNKNOWN")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_codes_are_named() {
        let name = |v: &'static str| grpc_code_name(&http::HeaderValue::from_static(v));
        assert_eq!(name("0"), "OK");
        assert_eq!(name("12"), "UNIMPLEMENTED");
        assert_eq!(name("99"), "UNKNOWN");
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&custom), "other");
    }
}
