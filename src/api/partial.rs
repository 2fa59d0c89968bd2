//! The tower layer that lets a cluster member answer without shards none of whose holders is
//! up, and says so.
//!
//! Each request runs inside a partial-shards record ([`recording_partial_shards`]); when its
//! scans left shards out, the response carries `X-Spanlake-Partial: shards=0,5` (an HTTP
//! header, or gRPC initial metadata). A request with `partial=false` in its query string, or
//! the header `X-Spanlake-Partial: false`, is strict: a missing shard fails it (503 /
//! `UNAVAILABLE`) instead; so is every request when the cluster's `partial_results` is off.
//! Answers streamed after their headers cannot carry the header; Tempo's search answers say it
//! in their metrics instead (`completedJobs < totalJobs`), and Flight SQL in the app metadata
//! of its `FlightInfo` and of an answer's first message.

use std::sync::Arc;
use std::task::{Context, Poll};

use crate::query::cluster::recording_partial_shards;
use crate::tables::PartialShards;

/// The header (and gRPC metadata key) that flags a partial answer, or asks for a strict one.
pub const PARTIAL_HEADER: &str = "x-spanlake-partial";

/// Wraps requests in a partial-shards record; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct PartialLayer {
    /// Whether requests may be answered partially unless they ask otherwise.
    pub allow: bool,
}

impl<S> tower::Layer<S> for PartialLayer {
    type Service = Partial<S>;

    fn layer(&self, inner: S) -> Partial<S> {
        Partial {
            inner,
            allow: self.allow,
        }
    }
}

/// The service [`PartialLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Partial<S> {
    inner: S,
    allow: bool,
}

/// Whether `request` asks for a complete answer or nothing.
fn asks_strict<B>(request: &http::Request<B>) -> bool {
    let in_query = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.eq_ignore_ascii_case("partial=false"))
    });
    let in_header = request
        .headers()
        .get(PARTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    in_query || in_header
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for Partial<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let record = Arc::new(PartialShards::new(!self.allow || asks_strict(&request)));
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = recording_partial_shards(record.clone(), future).await?;
            let missing = record.missing();
            if !missing.is_empty() {
                let shards: Vec<String> = missing.iter().map(u32::to_string).collect();
                if let Ok(value) =
                    http::HeaderValue::from_str(&format!("shards={}", shards.join(",")))
                {
                    response.headers_mut().insert(PARTIAL_HEADER, value);
                }
            }
            Ok(response)
        })
    }
}
