//! Grafana Tempo's query API: the HTTP endpoints on the HTTP port and the tempopb gRPC
//! services, answering exactly as Tempo's query frontend does so that Grafana, tempo-cli and
//! tempo-vulture work unchanged.
//!
//! A thin edge: [`params`] reads a request into a typed query request, [`crate::query`] runs
//! it, and this module turns the answer into tempopb messages, which [`http`] writes as
//! Tempo's JSON ([`json`]) or protobuf and [`grpc`] sends. Errors are the query layer's one
//! [`QueryError`], mapped to a status by [`crate::api::status`]. Nothing here builds a plan.

pub mod grpc;
pub mod http;
pub mod json;
pub mod params;

use std::collections::HashMap;
use std::future::Future;

use prost::Message;

use crate::config::QuerySettings;
use crate::query::metrics::{self, MetricsLimits, MetricsRequest, MetricsResponse};
use crate::query::search::{self, SearchMetrics, SearchResponse, StageTimings, TraceResult};
use crate::query::tags::{self, TagScope, TagValuesRequest, TagsRequest};
use crate::query::trace::{self, TraceRequest};
use crate::query::{ErrorKind, QueryEngine, QueryError, Result};
use crate::schema::SpanRow;
use crate::schema::to_otlp::{key_values, resource_spans};
use crate::tempopb;
use crate::tenant;
use crate::time::WindowRule;
use params::SearchParams;

/// Root service name of a trace whose root span has not arrived, as Tempo reports it.
pub const ROOT_NOT_RECEIVED: &str = "<root span not yet received>";

/// The query API over one engine.
#[derive(Debug, Clone)]
pub struct TempoApi {
    /// Runs the queries.
    pub engine: QueryEngine,
    /// Limits and defaults of the query API.
    pub settings: QuerySettings,
    /// Whether requests must name their tenant.
    pub multitenancy: bool,
}

/// A trace as found: complete, or cut down to the size limit.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundTrace {
    /// The spans kept.
    pub trace: tempopb::Trace,
    /// Set when spans were left out to respect `max_bytes_per_trace`.
    pub truncated: bool,
}

impl TempoApi {
    /// The API over `engine` with `settings`.
    pub fn new(engine: QueryEngine, settings: QuerySettings, multitenancy: bool) -> Self {
        Self {
            engine,
            settings,
            multitenancy,
        }
    }

    /// The tenants a request reads, from its org id (`a|b` reads both).
    pub fn tenants(&self, org_id: Option<&str>) -> Result<Vec<String>> {
        Ok(tenant::resolve_many(org_id, self.multitenancy)?)
    }

    /// The window rule of search and tag requests.
    pub fn window_rule(&self) -> WindowRule {
        WindowRule {
            default_window: self.settings.default_search_window,
            max_duration: self.settings.max_search_duration,
        }
    }

    /// The limits metrics requests are checked against.
    pub fn metrics_limits(&self) -> MetricsLimits {
        MetricsLimits {
            max_duration_ns: crate::time::duration_ns(self.settings.max_metrics_duration),
            end_cutoff_ns: crate::time::duration_ns(self.settings.metrics_end_cutoff),
            max_series: self.settings.max_metrics_series as usize,
        }
    }

    /// Runs a TraceQL metrics range query.
    pub async fn metrics_query_range(
        &self,
        tenants: &[String],
        request: &MetricsRequest,
    ) -> Result<tempopb::QueryRangeResponse> {
        let answer = self
            .timed(metrics::query(&self.engine, tenants, request))
            .await?;
        Ok(tempopb::QueryRangeResponse {
            series: answer
                .series
                .iter()
                .map(|s| tempopb::TimeSeries {
                    labels: key_values(&s.labels),
                    samples: s
                        .samples
                        .iter()
                        .map(|&(timestamp_ms, value)| tempopb::Sample {
                            value,
                            timestamp_ms,
                        })
                        .collect(),
                    exemplars: s
                        .exemplars
                        .iter()
                        .map(|e| tempopb::Exemplar {
                            labels: key_values(&e.labels),
                            value: e.value,
                            timestamp_ms: e.timestamp_ms,
                        })
                        .collect(),
                })
                .collect(),
            metrics: Some(metrics_metrics(&answer)),
            status: partial_status(&answer),
            message: answer.partial.clone().unwrap_or_default(),
        })
    }

    /// Runs a TraceQL metrics instant query.
    pub async fn metrics_query_instant(
        &self,
        tenants: &[String],
        request: &MetricsRequest,
    ) -> Result<tempopb::QueryInstantResponse> {
        let answer = self
            .timed(metrics::query(&self.engine, tenants, request))
            .await?;
        Ok(tempopb::QueryInstantResponse {
            series: answer
                .series
                .iter()
                .filter_map(|s| {
                    let &(_, value) = s.samples.last()?;
                    Some(tempopb::InstantSeries {
                        labels: key_values(&s.labels),
                        value,
                    })
                })
                .collect(),
            metrics: Some(metrics_metrics(&answer)),
            status: partial_status(&answer),
            message: answer.partial.clone().unwrap_or_default(),
        })
    }

    /// Runs `work` under the query timeout.
    pub async fn timed<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .unwrap_or_else(|_| Err(QueryError::timeout()))
    }

    /// Runs a search. After each job `progress` receives the traces that job added and the
    /// metrics so far; the return value is the complete response.
    pub async fn search(
        &self,
        tenants: &[String],
        params: &SearchParams,
        progress: impl FnMut(Vec<tempopb::TraceSearchMetadata>, tempopb::SearchMetrics),
    ) -> Result<tempopb::SearchResponse> {
        Ok(self.search_timed(tenants, params, progress).await?.0)
    }

    /// [`Self::search`], and where its time went.
    pub async fn search_timed(
        &self,
        tenants: &[String],
        params: &SearchParams,
        mut progress: impl FnMut(Vec<tempopb::TraceSearchMetadata>, tempopb::SearchMetrics),
    ) -> Result<(tempopb::SearchResponse, StageTimings)> {
        let tag_search = params.tag_search;
        let work = search::search(&self.engine, tenants, &params.request, |added, metrics| {
            let added = added.iter().map(|t| metadata(t, tag_search)).collect();
            progress(added, search_metrics(metrics));
        });
        let SearchResponse {
            traces,
            metrics,
            timings,
        } = self.timed(work).await?;
        let response = tempopb::SearchResponse {
            traces: traces.iter().map(|t| metadata(t, tag_search)).collect(),
            metrics: Some(search_metrics(&metrics)),
        };
        Ok((response, timings))
    }

    /// The plan a search runs to pick its traces, as text, for the first of `tenants`; with
    /// `analyze`, run, with its metrics per operator.
    pub async fn explain_search(
        &self,
        tenants: &[String],
        params: &SearchParams,
        analyze: bool,
    ) -> Result<String> {
        let tenant = tenants
            .first()
            .ok_or_else(|| QueryError::bad_request("no tenant to explain the search for"))?;
        self.timed(search::explain(
            &self.engine,
            tenant,
            &params.request,
            analyze,
        ))
        .await
    }

    /// The trace a trace-by-id request asks for, cut to `max_bytes_per_trace`; `None` when it
    /// does not exist.
    pub async fn find_trace(
        &self,
        tenants: &[String],
        request: &TraceRequest,
    ) -> Result<Option<FoundTrace>> {
        let rows = self
            .timed(trace::find_trace(&self.engine, tenants, request))
            .await?;
        Ok(rows.map(|rows| self.sized(rows)))
    }

    /// The v1 answer: the whole trace, refused when too large.
    pub async fn trace_v1(
        &self,
        tenants: &[String],
        request: &TraceRequest,
    ) -> Result<Option<tempopb::Trace>> {
        match self.find_trace(tenants, request).await? {
            Some(found) if found.truncated => Err(QueryError::new(
                ErrorKind::TooLarge,
                format!(
                    "trace exceeds max size (max bytes: {})",
                    self.settings.max_bytes_per_trace
                ),
            )),
            found => Ok(found.map(|f| f.trace)),
        }
    }

    /// The v2 answer: the trace, with PARTIAL status and Tempo's message when truncated, and
    /// an empty trace when there is none.
    pub async fn trace_v2(
        &self,
        tenants: &[String],
        request: &TraceRequest,
    ) -> Result<tempopb::TraceByIdResponse> {
        let Some(found) = self.find_trace(tenants, request).await? else {
            return Ok(tempopb::TraceByIdResponse {
                trace: Some(Default::default()),
                metrics: Some(tempopb::TraceByIdMetrics::default()),
                ..Default::default()
            });
        };
        let (status, message) = if found.truncated {
            (
                tempopb::PartialStatus::Partial as i32,
                format!(
                    "Trace exceeds maximum size of {} bytes, a partial trace is returned",
                    self.settings.max_bytes_per_trace
                ),
            )
        } else {
            (tempopb::PartialStatus::Complete as i32, String::new())
        };
        Ok(tempopb::TraceByIdResponse {
            trace: Some(found.trace),
            metrics: Some(tempopb::TraceByIdMetrics::default()),
            status,
            message,
        })
    }

    /// The trace of `rows`, cut to its earliest spans when larger than `max_bytes_per_trace`.
    fn sized(&self, rows: Vec<SpanRow>) -> FoundTrace {
        let max = self.settings.max_bytes_per_trace;
        let trace = tempopb::Trace {
            resource_spans: resource_spans(&rows),
        };
        if trace.encoded_len() <= max {
            return FoundTrace {
                trace,
                truncated: false,
            };
        }
        // Keep the longest prefix of spans that fits.
        let mut budget = max;
        let mut kept = 0;
        for row in &rows {
            let cost = tempopb::Trace {
                resource_spans: resource_spans(std::slice::from_ref(row)),
            }
            .encoded_len();
            if cost > budget {
                break;
            }
            budget -= cost;
            kept += 1;
        }
        FoundTrace {
            trace: tempopb::Trace {
                resource_spans: resource_spans(&rows[..kept]),
            },
            truncated: true,
        }
    }

    /// v1 tag names: one sorted list, intrinsics only when asked for by scope.
    pub async fn search_tags(
        &self,
        tenants: &[String],
        request: &TagsRequest,
    ) -> Result<tempopb::SearchTagsResponse> {
        let intrinsic_scope = request.scope == TagScope::Intrinsic;
        let scopes = self
            .timed(tags::tag_names(&self.engine, tenants, request))
            .await?;
        let mut names: Vec<String> = scopes
            .into_iter()
            .filter(|s| intrinsic_scope || s.name != TagScope::Intrinsic.name())
            .flat_map(|s| s.tags)
            .collect();
        names.sort();
        names.dedup();
        if request.limit > 0 {
            names.truncate(request.limit);
        }
        Ok(tempopb::SearchTagsResponse {
            tag_names: names,
            metrics: Some(tempopb::MetadataMetrics::default()),
        })
    }

    /// v2 tag names, per scope.
    pub async fn search_tags_v2(
        &self,
        tenants: &[String],
        request: &TagsRequest,
    ) -> Result<tempopb::SearchTagsV2Response> {
        let scopes = self
            .timed(tags::tag_names(&self.engine, tenants, request))
            .await?;
        Ok(tempopb::SearchTagsV2Response {
            scopes: scopes
                .into_iter()
                .map(|s| tempopb::SearchTagsV2Scope {
                    name: s.name.to_string(),
                    tags: s.tags,
                })
                .collect(),
            metrics: Some(tempopb::MetadataMetrics::default()),
        })
    }

    /// v2 tag values: typed values of a TraceQL attribute or intrinsic.
    pub async fn search_tag_values_v2(
        &self,
        tenants: &[String],
        request: &TagValuesRequest,
    ) -> Result<tempopb::SearchTagValuesV2Response> {
        let values = self
            .timed(tags::tag_values(&self.engine, tenants, request))
            .await?;
        Ok(tempopb::SearchTagValuesV2Response {
            tag_values: values
                .into_iter()
                .map(|v| tempopb::TagValue {
                    r#type: v.kind.to_string(),
                    value: v.value,
                })
                .collect(),
            metrics: Some(tempopb::MetadataMetrics::default()),
        })
    }

    /// v1 tag values: values of a bare attribute name, sorted.
    pub async fn search_tag_values(
        &self,
        tenants: &[String],
        request: &TagValuesRequest,
    ) -> Result<tempopb::SearchTagValuesResponse> {
        let values = self
            .timed(tags::bare_tag_values(&self.engine, tenants, request))
            .await?;
        Ok(tempopb::SearchTagValuesResponse {
            tag_values: values,
            metrics: Some(tempopb::MetadataMetrics::default()),
        })
    }
}

fn metrics_metrics(answer: &MetricsResponse) -> tempopb::SearchMetrics {
    tempopb::SearchMetrics {
        inspected_spans: answer.inspected_spans,
        total_blocks: answer.total_blocks,
        total_block_bytes: answer.total_block_bytes,
        total_jobs: answer.jobs,
        completed_jobs: answer.jobs,
        ..Default::default()
    }
}

fn partial_status(answer: &MetricsResponse) -> i32 {
    match answer.partial {
        Some(_) => tempopb::PartialStatus::Partial as i32,
        None => tempopb::PartialStatus::Complete as i32,
    }
}

fn search_metrics(m: &SearchMetrics) -> tempopb::SearchMetrics {
    tempopb::SearchMetrics {
        total_blocks: m.total_blocks,
        total_block_bytes: m.total_block_bytes,
        total_jobs: m.total_jobs,
        completed_jobs: m.completed_jobs,
        ..Default::default()
    }
}

/// A search result as Tempo lists it; a tag search shows no spansets.
fn metadata(trace: &TraceResult, tag_search: bool) -> tempopb::TraceSearchMetadata {
    let span_sets: Vec<tempopb::SpanSet> = if tag_search {
        Vec::new()
    } else {
        trace
            .span_sets
            .iter()
            .map(|set| tempopb::SpanSet {
                spans: set
                    .spans
                    .iter()
                    .map(|s| tempopb::Span {
                        span_id: s.span_id.clone(),
                        name: s.name.clone(),
                        start_time_unix_nano: s.start_time_unix_nano.max(0) as u64,
                        duration_nanos: s.duration_nanos.max(0) as u64,
                        attributes: key_values(&s.attributes),
                    })
                    .collect(),
                matched: set.matched as u32,
                attributes: key_values(&set.attributes),
            })
            .collect()
    };
    let service_stats: HashMap<String, tempopb::ServiceStats> = trace
        .service_stats
        .iter()
        .map(|(service, stats)| {
            (
                service.clone(),
                tempopb::ServiceStats {
                    span_count: stats.span_count,
                    error_count: stats.error_count,
                },
            )
        })
        .collect();
    tempopb::TraceSearchMetadata {
        trace_id: trace.trace_id.clone(),
        root_service_name: trace
            .root_service_name
            .clone()
            .unwrap_or_else(|| ROOT_NOT_RECEIVED.to_string()),
        root_trace_name: trace.root_trace_name.clone().unwrap_or_default(),
        start_time_unix_nano: trace.start_time_unix_nano.max(0) as u64,
        duration_ms: u32::try_from(trace.duration_ms.max(0)).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
        service_stats,
    }
}
