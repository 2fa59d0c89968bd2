//! tempopb gRPC services: `StreamingQuerier` (what Grafana and tempo-cli call) and the unary
//! `Querier`. Served on the gRPC port and, over h2c, on the HTTP port.
//!
//! A streaming search sends one message per finished job with the traces that job added
//! and the metrics so far, then the complete result; every message carries metrics.

use std::pin::Pin;

use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::TempoApi;
use super::params::{self, RawSearch, SearchParams};
use crate::api::status::grpc_status;
use crate::query::QueryError;
use crate::query::tags::{TagValuesRequest, TagsRequest};
use crate::tempopb::querier_server::{Querier, QuerierServer};
use crate::tempopb::streaming_querier_server::{StreamingQuerier, StreamingQuerierServer};
use crate::tempopb::{
    QueryInstantRequest, QueryInstantResponse, QueryRangeRequest, QueryRangeResponse, Sample,
    SearchMetrics, SearchRequest, SearchResponse, SearchTagValuesRequest, SearchTagValuesResponse,
    SearchTagValuesV2Response, SearchTagsRequest, SearchTagsResponse, SearchTagsV2Response,
    TimeSeries, TraceByIdRequest, TraceByIdResponse, TraceSearchMetadata,
};
use crate::tenant::ORG_ID_HEADER;

/// Largest gRPC message accepted or sent, as Tempo configures its server.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Streamed search results are cut into messages of about this size: Grafana receives at
/// most 4 MiB per message.
pub const STREAM_SEGMENT_BYTES: usize = 1 << 20;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Both tempopb services over one API.
#[derive(Debug, Clone)]
pub struct TempoGrpc {
    api: TempoApi,
}

impl TempoGrpc {
    pub fn new(api: TempoApi) -> Self {
        Self { api }
    }

    /// The `StreamingQuerier` service.
    pub fn streaming(&self) -> StreamingQuerierServer<Self> {
        StreamingQuerierServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The unary `Querier` service.
    pub fn querier(&self) -> QuerierServer<Self> {
        QuerierServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn tenants<T>(&self, request: &Request<T>) -> Result<Vec<String>, Status> {
        let org_id = request
            .metadata()
            .get(ORG_ID_HEADER)
            .and_then(|v| v.to_str().ok());
        self.api.tenants(org_id).map_err(|e| grpc_status(&e))
    }

    fn tags(
        &self,
        request: &Request<SearchTagsRequest>,
    ) -> Result<(Vec<String>, TagsRequest), Status> {
        let tenants = self.tenants(request)?;
        let tags = params::tags_from_grpc(&self.api, request.get_ref()).map_err(status)?;
        Ok((tenants, tags))
    }

    fn values(
        &self,
        request: &Request<SearchTagValuesRequest>,
    ) -> Result<(Vec<String>, TagValuesRequest), Status> {
        let tenants = self.tenants(request)?;
        let values = params::values_from_grpc(&self.api, request.get_ref()).map_err(status)?;
        Ok((tenants, values))
    }

    async fn tags_v1(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<SearchTagsResponse, Status> {
        let (tenants, tags) = self.tags(&request)?;
        self.api.search_tags(&tenants, &tags).await.map_err(status)
    }

    async fn tags_v2(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<SearchTagsV2Response, Status> {
        let (tenants, tags) = self.tags(&request)?;
        self.api
            .search_tags_v2(&tenants, &tags)
            .await
            .map_err(status)
    }

    async fn values_v1(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<SearchTagValuesResponse, Status> {
        let (tenants, values) = self.values(&request)?;
        self.api
            .search_tag_values(&tenants, &values)
            .await
            .map_err(status)
    }

    async fn values_v2(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<SearchTagValuesV2Response, Status> {
        let (tenants, values) = self.values(&request)?;
        self.api
            .search_tag_values_v2(&tenants, &values)
            .await
            .map_err(status)
    }

    /// Runs a search, sending a message per finished job and the complete result last.
    fn search_stream(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Streamed<SearchResponse>, Status> {
        let tenants = self.tenants(&request)?;
        let api = self.api.clone();
        let params = search_params(&api, request.get_ref())?;
        // Refuse a bad query with the call's status, before the stream starts.
        params.request.check().map_err(status)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let progress = tx.clone();
            let result = api
                .search(&tenants, &params, move |traces, metrics| {
                    if !traces.is_empty() {
                        for segment in segments(traces, metrics) {
                            let _ = progress.send(Ok(segment));
                        }
                    }
                })
                .await;
            match result {
                Ok(done) => {
                    let metrics = done.metrics.unwrap_or_default();
                    for segment in segments(done.traces, metrics) {
                        let _ = tx.send(Ok(segment));
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(status(e)));
                }
            }
        });
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

fn status(e: QueryError) -> Status {
    grpc_status(&e)
}

fn search_params(api: &TempoApi, request: &SearchRequest) -> Result<SearchParams, Status> {
    SearchParams::new(
        RawSearch::from_grpc(request),
        &api.settings,
        &api.window_rule(),
    )
    .map_err(status)
}

/// Search messages of about [`STREAM_SEGMENT_BYTES`] each, every one with `metrics`; at
/// least one, even without traces.
fn segments(traces: Vec<TraceSearchMetadata>, metrics: SearchMetrics) -> Vec<SearchResponse> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for trace in traces {
        let len = trace.encoded_len();
        if !current.is_empty() && size + len > STREAM_SEGMENT_BYTES {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(trace);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|traces| SearchResponse {
            traces,
            metrics: Some(metrics),
        })
        .collect()
}

/// A stream of exactly one message.
fn once<T: Send + 'static>(message: T) -> Streamed<T> {
    Box::pin(futures::stream::once(async move { Ok(message) }))
}

#[tonic::async_trait]
impl StreamingQuerier for TempoGrpc {
    type SearchStream = Streamed<SearchResponse>;
    type SearchTagsStream = Streamed<SearchTagsResponse>;
    type SearchTagsV2Stream = Streamed<SearchTagsV2Response>;
    type SearchTagValuesStream = Streamed<SearchTagValuesResponse>;
    type SearchTagValuesV2Stream = Streamed<SearchTagValuesV2Response>;
    type MetricsQueryRangeStream = Streamed<QueryRangeResponse>;
    type MetricsQueryInstantStream = Streamed<QueryInstantResponse>;

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<Self::SearchStream>, Status> {
        self.search_stream(request).map(Response::new)
    }

    async fn search_tags(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsStream>, Status> {
        Ok(Response::new(once(self.tags_v1(request).await?)))
    }

    async fn search_tags_v2(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsV2Stream>, Status> {
        Ok(Response::new(once(self.tags_v2(request).await?)))
    }

    async fn search_tag_values(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesStream>, Status> {
        Ok(Response::new(once(self.values_v1(request).await?)))
    }

    async fn search_tag_values_v2(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesV2Stream>, Status> {
        Ok(Response::new(once(self.values_v2(request).await?)))
    }

    async fn metrics_query_range(
        &self,
        request: Request<QueryRangeRequest>,
    ) -> Result<Response<Self::MetricsQueryRangeStream>, Status> {
        let tenants = self.tenants(&request)?;
        let query =
            params::metrics_range_from_grpc(&self.api, request.get_ref()).map_err(status)?;
        let answer = if query.instant {
            let instant = self
                .api
                .metrics_query_instant(&tenants, &query)
                .await
                .map_err(status)?;
            instant_as_range(instant, query.grid.end_ns)
        } else {
            self.api
                .metrics_query_range(&tenants, &query)
                .await
                .map_err(status)?
        };
        Ok(Response::new(once(answer)))
    }

    async fn metrics_query_instant(
        &self,
        request: Request<QueryInstantRequest>,
    ) -> Result<Response<Self::MetricsQueryInstantStream>, Status> {
        let tenants = self.tenants(&request)?;
        let query =
            params::metrics_instant_from_grpc(&self.api, request.get_ref()).map_err(status)?;
        let answer = self
            .api
            .metrics_query_instant(&tenants, &query)
            .await
            .map_err(status)?;
        Ok(Response::new(once(answer)))
    }
}

/// An instant answer in range form: one sample per series, at the end of the window.
fn instant_as_range(instant: QueryInstantResponse, end_ns: i64) -> QueryRangeResponse {
    QueryRangeResponse {
        series: instant
            .series
            .into_iter()
            .map(|s| TimeSeries {
                labels: s.labels,
                samples: vec![Sample {
                    value: s.value,
                    timestamp_ms: end_ns / 1_000_000,
                }],
                exemplars: Vec::new(),
            })
            .collect(),
        metrics: instant.metrics,
        status: instant.status,
        message: instant.message,
    }
}

#[tonic::async_trait]
impl Querier for TempoGrpc {
    async fn find_trace_by_id(
        &self,
        request: Request<TraceByIdRequest>,
    ) -> Result<Response<TraceByIdResponse>, Status> {
        let tenants = self.tenants(&request)?;
        let trace = params::trace_from_grpc(request.get_ref()).map_err(status)?;
        let response = self.api.trace_v2(&tenants, &trace).await.map_err(status)?;
        Ok(Response::new(response))
    }

    async fn search_recent(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let tenants = self.tenants(&request)?;
        let params = search_params(&self.api, request.get_ref())?;
        let response = self
            .api
            .search(&tenants, &params, |_, _| {})
            .await
            .map_err(status)?;
        Ok(Response::new(response))
    }

    async fn search_tags(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<SearchTagsResponse>, Status> {
        self.tags_v1(request).await.map(Response::new)
    }

    async fn search_tags_v2(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<SearchTagsV2Response>, Status> {
        self.tags_v2(request).await.map(Response::new)
    }

    async fn search_tag_values(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<SearchTagValuesResponse>, Status> {
        self.values_v1(request).await.map(Response::new)
    }

    async fn search_tag_values_v2(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<SearchTagValuesV2Response>, Status> {
        self.values_v2(request).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_results_are_cut_into_segments_that_all_carry_metrics() {
        let trace = |i: usize| TraceSearchMetadata {
            trace_id: format!("{i:x}"),
            root_service_name: "x".repeat(100_000),
            ..Default::default()
        };
        let metrics = SearchMetrics {
            total_jobs: 3,
            ..Default::default()
        };
        let out = segments((0..25).map(trace).collect(), metrics);
        assert!(out.len() >= 3, "{} segments", out.len());
        assert!(out.iter().all(|m| m.metrics == Some(metrics)));
        assert!(
            out.iter()
                .all(|m| m.encoded_len() <= STREAM_SEGMENT_BYTES + 200_000)
        );
        assert_eq!(out.iter().map(|m| m.traces.len()).sum::<usize>(), 25);
        let empty = segments(Vec::new(), metrics);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].traces.is_empty());
    }
}
