//! Self-metrics of one server, rendered in Prometheus' text exposition format 0.0.4.
//!
//! [`Telemetry`] owns one `prometheus::Registry` per server (never the process-global default
//! registry), so two servers in one process — as in the integration tests — count separately.
//! It holds the request duration histogram, the ingest counters, and the block and live-span
//! gauges, which are read at scrape time from sources the server registers
//! ([`Telemetry::blocks_from`], [`Telemetry::live_spans_from`]), so they cannot drift from the
//! truth.
//!
//! This module sits below every other layer: any of them may count into it, and it imports no
//! other spanlake module nor any transport (no axum, no tonic). It decides nothing; it counts
//! what callers report, with the label values they give.
//!
//! Requests are counted by the histogram's `_count` series; there is no separate
//! `spanlake_requests_total`, so the two can never disagree. Label values are the callers'
//! responsibility and must stay of bounded cardinality. Labels are written in name order, `le`
//! last; families in name order; a family with no series is not written.
//!
//! ```text
//! spanlake_request_duration_seconds_count{method="GET",route="/api/traces/{id}",status_code="404"} 1
//! spanlake_ingest_spans_received_total{transport="otlp_grpc"} 12
//! spanlake_blocks{tenant="single-tenant"} 1
//! ```

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Content type of the text exposition format 0.0.4 that [`Telemetry::render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Upper bounds of the request duration buckets, in seconds (Prometheus' defaults).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Committed blocks of one tenant, as the block gauges report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantBlocks {
    /// The `tenant` label.
    pub tenant: String,
    /// Number of committed blocks: `spanlake_blocks`.
    pub blocks: u64,
    /// Bytes of their Parquet files: `spanlake_block_bytes`.
    pub bytes: u64,
    /// Committed blocks by signal and compaction level: `spanlake_blocks_by_level`.
    pub by_level: Vec<BlockLevel>,
}

/// Blocks of one tenant, signal and compaction level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLevel {
    pub signal: &'static str,
    pub level: u32,
    pub blocks: u64,
}

/// One tenant's Parquet metadata cache (footers and page indexes of block files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCache {
    pub tenant: String,
    /// Files whose metadata is cached: `spanlake_metadata_cache_entries`.
    pub entries: u64,
    /// Reads those entries answered without a GET: `spanlake_metadata_cache_hits`.
    pub hits: u64,
    /// Memory they take: `spanlake_metadata_cache_bytes`.
    pub bytes: u64,
}

type BlocksSource = Box<dyn Fn() -> Vec<TenantBlocks> + Send + Sync>;
type CacheSource = Box<dyn Fn() -> Vec<TenantCache> + Send + Sync>;
type DiskCacheSource = Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;
type BlockCacheSource = Box<dyn Fn() -> Option<(u64, u64, u64)> + Send + Sync>;
type CountSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// Every self-metric of one server; clones share one registry.
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    requests: HistogramVec,
    ingest_requests: IntCounterVec,
    ingest_spans: IntCounterVec,
    ingest_refused_spans: IntCounterVec,
    ingest_bytes: IntCounterVec,
    ingest_records: IntCounterVec,
    ingest_refused_records: IntCounterVec,
    compactions: IntCounterVec,
    compacted_blocks: IntCounterVec,
    compacted_bytes: IntCounterVec,
    retention_deleted: IntCounterVec,
    cluster_bytes: IntCounterVec,
    gauges: Arc<ScrapeGauges>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A registry with every counter at zero and no gauge source yet.
    pub fn new() -> Self {
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "spanlake_request_duration_seconds",
                "Time from receiving a request to the end of its response body, by route, method and status; `_count` counts requests.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "method", "status_code"],
        )
        .expect("the request histogram's name, labels and buckets are valid");
        let ingest_requests = counter(
            "spanlake_ingest_requests_total",
            "OTLP export requests handled by a receiver, by transport and outcome (`ok` or why it was refused).",
            &["transport", "outcome"],
        );
        let ingest_spans = counter(
            "spanlake_ingest_spans_received_total",
            "Spans stored and acknowledged, by transport.",
            &["transport"],
        );
        let ingest_refused_spans = counter(
            "spanlake_ingest_spans_refused_total",
            "Spans in decoded export requests that were refused, by transport and reason.",
            &["transport", "reason"],
        );
        let ingest_bytes = counter(
            "spanlake_ingest_bytes_received_total",
            "Uncompressed payload bytes of decoded export requests, by transport.",
            &["transport"],
        );
        let ingest_records = counter(
            "spanlake_ingest_records_received_total",
            "Log records and metric points stored and acknowledged, by transport and signal.",
            &["transport", "signal"],
        );
        let ingest_refused_records = counter(
            "spanlake_ingest_records_refused_total",
            "Log records and metric points in decoded export requests that were refused, by transport, signal and reason.",
            &["transport", "signal", "reason"],
        );
        let compactions = counter(
            "spanlake_compactions_total",
            "Compactions committed, by signal.",
            &["signal"],
        );
        let compacted_blocks = counter(
            "spanlake_compacted_blocks_total",
            "Blocks replaced by compactions, by signal.",
            &["signal"],
        );
        let compacted_bytes = counter(
            "spanlake_compacted_bytes_total",
            "Bytes of the blocks compactions read and replaced, by signal.",
            &["signal"],
        );
        let retention_deleted = counter(
            "spanlake_retention_deleted_blocks_total",
            "Blocks removed because all their rows were older than the retention, by signal.",
            &["signal"],
        );
        let cluster_bytes = counter(
            "spanlake_cluster_bytes_total",
            "Bytes on the connections other members opened to this member's cluster port (pushes, query stages, shard reads), by direction (`received`, `sent`).",
            &["direction"],
        );
        let gauges = Arc::new(ScrapeGauges::new());
        let registry = Registry::new();
        let collectors: [Box<dyn Collector>; 13] = [
            Box::new(requests.clone()),
            Box::new(ingest_requests.clone()),
            Box::new(ingest_spans.clone()),
            Box::new(ingest_refused_spans.clone()),
            Box::new(ingest_bytes.clone()),
            Box::new(ingest_records.clone()),
            Box::new(ingest_refused_records.clone()),
            Box::new(compactions.clone()),
            Box::new(compacted_blocks.clone()),
            Box::new(compacted_bytes.clone()),
            Box::new(retention_deleted.clone()),
            Box::new(cluster_bytes.clone()),
            Box::new(SharedGauges(gauges.clone())),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("metric names are distinct and registered once");
        }
        Self {
            registry,
            requests,
            ingest_requests,
            ingest_spans,
            ingest_refused_spans,
            ingest_bytes,
            ingest_records,
            ingest_refused_records,
            compactions,
            compacted_blocks,
            compacted_bytes,
            retention_deleted,
            cluster_bytes,
            gauges,
        }
    }

    /// Counts bytes received from and sent to other members on the cluster port.
    pub fn cluster_bytes(&self, received: usize, sent: usize) {
        if received > 0 {
            self.cluster_bytes
                .with_label_values(&["received"])
                .inc_by(received as u64);
        }
        if sent > 0 {
            self.cluster_bytes
                .with_label_values(&["sent"])
                .inc_by(sent as u64);
        }
    }

    /// Counts an export request of log records or metric points (`signal`) that was stored:
    /// `records` of them in `bytes` payload bytes.
    pub fn ingest_records_accepted(
        &self,
        signal: &str,
        transport: &str,
        bytes: usize,
        records: usize,
    ) {
        self.ingest_requests
            .with_label_values(&[transport, "ok"])
            .inc();
        self.ingest_records
            .with_label_values(&[transport, signal])
            .inc_by(records as u64);
        self.ingest_bytes
            .with_label_values(&[transport])
            .inc_by(bytes as u64);
    }

    /// Counts a refused export request of log records or metric points (`signal`).
    pub fn ingest_records_refused(
        &self,
        signal: &str,
        transport: &str,
        reason: &str,
        bytes: usize,
        records: usize,
    ) {
        self.ingest_requests
            .with_label_values(&[transport, reason])
            .inc();
        if records > 0 {
            self.ingest_refused_records
                .with_label_values(&[transport, signal, reason])
                .inc_by(records as u64);
        }
        if bytes > 0 {
            self.ingest_bytes
                .with_label_values(&[transport])
                .inc_by(bytes as u64);
        }
    }

    /// Counts an export request that was stored: `spans` spans in `bytes` payload bytes.
    pub fn ingest_accepted(&self, transport: &str, bytes: usize, spans: usize) {
        self.ingest_requests
            .with_label_values(&[transport, "ok"])
            .inc();
        self.ingest_spans
            .with_label_values(&[transport])
            .inc_by(spans as u64);
        self.ingest_bytes
            .with_label_values(&[transport])
            .inc_by(bytes as u64);
    }

    /// Counts a refused export request; `spans` and `bytes` are 0 when it could not be decoded.
    pub fn ingest_refused(&self, transport: &str, reason: &str, bytes: usize, spans: usize) {
        self.ingest_requests
            .with_label_values(&[transport, reason])
            .inc();
        if spans > 0 {
            self.ingest_refused_spans
                .with_label_values(&[transport, reason])
                .inc_by(spans as u64);
        }
        if bytes > 0 {
            self.ingest_bytes
                .with_label_values(&[transport])
                .inc_by(bytes as u64);
        }
    }

    /// Counts one committed compaction of `signal` that replaced `blocks` blocks of `bytes`.
    pub fn compacted(&self, signal: &str, blocks: usize, bytes: u64) {
        self.compactions.with_label_values(&[signal]).inc();
        self.compacted_blocks
            .with_label_values(&[signal])
            .inc_by(blocks as u64);
        self.compacted_bytes
            .with_label_values(&[signal])
            .inc_by(bytes);
    }

    /// Counts blocks of `signal` that retention removed.
    pub fn retention_deleted(&self, signal: &str, blocks: usize) {
        self.retention_deleted
            .with_label_values(&[signal])
            .inc_by(blocks as u64);
    }

    /// Records one finished request in `spanlake_request_duration_seconds`.
    pub fn observe_request(&self, route: &str, method: &str, status: &str, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, status])
            .observe(seconds);
    }

    /// Reads `spanlake_blocks` and `spanlake_block_bytes` from `source` at every scrape,
    /// replacing any earlier source.
    pub fn blocks_from(&self, source: impl Fn() -> Vec<TenantBlocks> + Send + Sync + 'static) {
        self.gauges.state.lock().blocks_source = Some(Box::new(source));
    }

    /// Reads the `spanlake_metadata_cache_*` gauges from `source` at every scrape.
    pub fn caches_from(&self, source: impl Fn() -> Vec<TenantCache> + Send + Sync + 'static) {
        self.gauges.state.lock().cache_source = Some(Box::new(source));
    }

    /// Reads `spanlake_disk_cache_hits` and `_misses` (ranged reads served from the local disk
    /// cache and from the store) from `source` at every scrape; nothing when it answers `None`.
    pub fn disk_cache_from(&self, source: impl Fn() -> Option<(u64, u64)> + Send + Sync + 'static) {
        self.gauges.state.lock().disk_cache_source = Some(Box::new(source));
    }

    /// Reads `spanlake_block_cache_hits`, `_misses` and `_bytes` (decoded block columns found
    /// kept, decoded, and the memory kept) from `source` at every scrape; nothing when it
    /// answers `None`.
    pub fn block_cache_from(
        &self,
        source: impl Fn() -> Option<(u64, u64, u64)> + Send + Sync + 'static,
    ) {
        self.gauges.state.lock().block_cache_source = Some(Box::new(source));
    }

    /// Reads `spanlake_live_spans` from `source` at every scrape, replacing any earlier source.
    pub fn live_spans_from(&self, source: impl Fn() -> u64 + Send + Sync + 'static) {
        self.gauges.state.lock().live_spans_source = Some(Box::new(source));
    }

    /// Every metric in the text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let encoder = TextEncoder::new();
        let mut out = String::new();
        // One family at a time: the encoder checks a family before writing any of it, so a
        // family it refuses is left out, not the rest of the scrape.
        for family in self.registry.gather() {
            if let Err(e) = encoder.encode_utf8(std::slice::from_ref(&family), &mut out) {
                tracing::error!(metric = family.name(), error = %e, "metric not rendered");
            }
        }
        out
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .expect("counter names and label names are valid")
}

/// The gauges read at scrape time, with their sources.
struct ScrapeGauges {
    /// Descriptions of the gauges, for the registry's consistency checks.
    descs: Vec<Desc>,
    /// Locked for a whole scrape, so concurrent scrapes do not fill the gauges at once.
    state: Mutex<GaugeState>,
}

struct GaugeState {
    blocks: GaugeVec,
    block_bytes: GaugeVec,
    blocks_by_level: GaugeVec,
    cache_entries: GaugeVec,
    cache_hits: GaugeVec,
    cache_bytes: GaugeVec,
    disk_cache_hits: Gauge,
    disk_cache_misses: Gauge,
    block_cache: [Gauge; 3],
    live_spans: Gauge,
    blocks_source: Option<BlocksSource>,
    cache_source: Option<CacheSource>,
    disk_cache_source: Option<DiskCacheSource>,
    block_cache_source: Option<BlockCacheSource>,
    live_spans_source: Option<CountSource>,
}

impl ScrapeGauges {
    fn new() -> Self {
        let blocks = gauge_vec("spanlake_blocks", "Committed blocks, by tenant.");
        let block_bytes = gauge_vec(
            "spanlake_block_bytes",
            "Bytes of committed blocks' Parquet files, by tenant.",
        );
        let blocks_by_level = GaugeVec::new(
            Opts::new(
                "spanlake_blocks_by_level",
                "Committed blocks, by tenant, signal and compaction level (0: as the ingester cut them).",
            ),
            &["tenant", "signal", "level"],
        )
        .expect("gauge names and labels are valid");
        let cache_entries = gauge_vec(
            "spanlake_metadata_cache_entries",
            "Block files whose Parquet footer and page index are cached in memory, by tenant.",
        );
        let cache_hits = gauge_vec(
            "spanlake_metadata_cache_hits",
            "Reads of cached Parquet metadata that needed no request to storage, by tenant (over the entries now cached; each entry cost one miss).",
        );
        let cache_bytes = gauge_vec(
            "spanlake_metadata_cache_bytes",
            "Memory of the cached Parquet metadata, by tenant.",
        );
        let disk_cache_hits = Gauge::new(
            "spanlake_disk_cache_hits",
            "Ranged reads of a remote block store answered from the local disk cache since start.",
        )
        .expect("the gauge's name is valid");
        let disk_cache_misses = Gauge::new(
            "spanlake_disk_cache_misses",
            "Ranged reads of a remote block store that went to the store since start.",
        )
        .expect("the gauge's name is valid");
        let block_cache = [
            (
                "spanlake_block_cache_hits",
                "Block columns a search found decoded in memory since start, per row group.",
            ),
            (
                "spanlake_block_cache_misses",
                "Block columns a search decoded from Parquet since start, per row group.",
            ),
            (
                "spanlake_block_cache_bytes",
                "Memory of the decoded block columns kept for searches.",
            ),
        ]
        .map(|(name, help)| Gauge::new(name, help).expect("the gauge's name is valid"));
        let live_spans = Gauge::new(
            "spanlake_live_spans",
            "Spans held in memory by the ingester: open traces and flushed blocks still in their grace period.",
        )
        .expect("the live span gauge's name is valid");
        let descs = [
            blocks.desc(),
            block_bytes.desc(),
            blocks_by_level.desc(),
            cache_entries.desc(),
            cache_hits.desc(),
            cache_bytes.desc(),
            disk_cache_hits.desc(),
            disk_cache_misses.desc(),
            live_spans.desc(),
        ]
        .into_iter()
        .chain(block_cache.iter().map(|g| g.desc()))
        .flatten()
        .cloned()
        .collect();
        Self {
            descs,
            state: Mutex::new(GaugeState {
                blocks,
                block_bytes,
                blocks_by_level,
                cache_entries,
                cache_hits,
                cache_bytes,
                disk_cache_hits,
                disk_cache_misses,
                block_cache,
                live_spans,
                blocks_source: None,
                cache_source: None,
                disk_cache_source: None,
                block_cache_source: None,
                live_spans_source: None,
            }),
        }
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let state = self.state.lock();
        let mut families = Vec::new();
        if let Some(source) = &state.blocks_source {
            state.blocks.reset();
            state.block_bytes.reset();
            state.blocks_by_level.reset();
            for tenant in source() {
                for level in &tenant.by_level {
                    state
                        .blocks_by_level
                        .with_label_values(&[
                            tenant.tenant.as_str(),
                            level.signal,
                            &level.level.to_string(),
                        ])
                        .set(level.blocks as f64);
                }
                let labels = [tenant.tenant.as_str()];
                state
                    .blocks
                    .with_label_values(&labels)
                    .set(tenant.blocks as f64);
                state
                    .block_bytes
                    .with_label_values(&labels)
                    .set(tenant.bytes as f64);
            }
            families.extend(state.blocks.collect());
            families.extend(state.block_bytes.collect());
            families.extend(state.blocks_by_level.collect());
        }
        if let Some(source) = &state.cache_source {
            for gauge in [&state.cache_entries, &state.cache_hits, &state.cache_bytes] {
                gauge.reset();
            }
            for cache in source() {
                let labels = [cache.tenant.as_str()];
                let values = [cache.entries, cache.hits, cache.bytes];
                for (gauge, value) in [&state.cache_entries, &state.cache_hits, &state.cache_bytes]
                    .into_iter()
                    .zip(values)
                {
                    gauge.with_label_values(&labels).set(value as f64);
                }
            }
            for gauge in [&state.cache_entries, &state.cache_hits, &state.cache_bytes] {
                families.extend(gauge.collect());
            }
        }
        if let Some((hits, misses)) = state.disk_cache_source.as_ref().and_then(|s| s()) {
            state.disk_cache_hits.set(hits as f64);
            state.disk_cache_misses.set(misses as f64);
            families.extend(state.disk_cache_hits.collect());
            families.extend(state.disk_cache_misses.collect());
        }
        if let Some((hits, misses, bytes)) = state.block_cache_source.as_ref().and_then(|s| s()) {
            for (gauge, value) in state.block_cache.iter().zip([hits, misses, bytes]) {
                gauge.set(value as f64);
                families.extend(gauge.collect());
            }
        }
        if let Some(source) = &state.live_spans_source {
            state.live_spans.set(source() as f64);
            families.extend(state.live_spans.collect());
        }
        families
    }
}

fn gauge_vec(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["tenant"]).expect("gauge names and labels are valid")
}

/// The registry's handle on the scrape-time gauges that [`Telemetry`] also holds.
struct SharedGauges(Arc<ScrapeGauges>);

impl Collector for SharedGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn content_type_is_the_encoders_format() {
        assert!(CONTENT_TYPE.starts_with(prometheus::TEXT_FORMAT));
    }

    #[test]
    fn request_histogram_is_cumulative_and_ends_with_inf() {
        let telemetry = Telemetry::new();
        // An observation equal to a bound falls into that bound's bucket.
        for seconds in [0.001, 0.005, 0.3, 20.0] {
            telemetry.observe_request("/api/echo", "GET", "200", seconds);
        }
        let text = telemetry.render();
        let lines = sample_lines(&text);
        let labels = r#"method="GET",route="/api/echo",status_code="200""#;
        let bucket =
            |le: &str| format!("spanlake_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}");
        assert!(
            lines.contains(&format!("{} 2", bucket("0.005")).as_str()),
            "{text}"
        );
        assert!(
            lines.contains(&format!("{} 2", bucket("0.25")).as_str()),
            "{text}"
        );
        assert!(
            lines.contains(&format!("{} 3", bucket("0.5")).as_str()),
            "{text}"
        );
        assert!(
            lines.contains(&format!("{} 3", bucket("10")).as_str()),
            "{text}"
        );
        assert!(
            lines.contains(&format!("{} 4", bucket("+Inf")).as_str()),
            "{text}"
        );
        let count = format!("spanlake_request_duration_seconds_count{{{labels}}} 4");
        assert!(lines.contains(&count.as_str()), "{text}");
        assert_eq!(
            lines.iter().filter(|l| l.contains("_bucket")).count(),
            DURATION_BUCKETS.len() + 1
        );
    }

    #[test]
    fn refused_exports_count_spans_and_bytes_only_when_decoded() {
        let telemetry = Telemetry::new();
        telemetry.ingest_accepted("otlp_grpc", 100, 3);
        telemetry.ingest_refused("otlp_http", "unsupported_content_type", 0, 0);
        telemetry.ingest_refused("otlp_grpc", "missing_tenant", 50, 2);
        let text = telemetry.render();
        let lines = sample_lines(&text);
        for expected in [
            r#"spanlake_ingest_requests_total{outcome="ok",transport="otlp_grpc"} 1"#,
            r#"spanlake_ingest_requests_total{outcome="unsupported_content_type",transport="otlp_http"} 1"#,
            r#"spanlake_ingest_requests_total{outcome="missing_tenant",transport="otlp_grpc"} 1"#,
            r#"spanlake_ingest_spans_received_total{transport="otlp_grpc"} 3"#,
            r#"spanlake_ingest_spans_refused_total{reason="missing_tenant",transport="otlp_grpc"} 2"#,
            r#"spanlake_ingest_bytes_received_total{transport="otlp_grpc"} 150"#,
        ] {
            assert!(lines.contains(&expected), "{expected} not in {text}");
        }
        // Nothing else: no zero-valued series for what an undecoded refusal did not carry.
        assert_eq!(lines.len(), 6, "{text}");
    }

    #[test]
    fn gauges_are_read_from_their_sources_at_every_scrape() {
        let telemetry = Telemetry::new();
        assert!(!telemetry.render().contains("spanlake_live_spans"));
        let tenants = Arc::new(Mutex::new(vec![TenantBlocks {
            tenant: "a".into(),
            blocks: 2,
            bytes: 2048,
            by_level: vec![BlockLevel {
                signal: "logs",
                level: 1,
                blocks: 2,
            }],
        }]));
        let source = tenants.clone();
        telemetry.blocks_from(move || source.lock().clone());
        telemetry.live_spans_from(|| 0);
        let text = telemetry.render();
        let lines = sample_lines(&text);
        assert!(
            lines.contains(&r#"spanlake_blocks{tenant="a"} 2"#),
            "{text}"
        );
        assert!(
            lines.contains(&r#"spanlake_block_bytes{tenant="a"} 2048"#),
            "{text}"
        );
        assert!(lines.contains(&"spanlake_live_spans 0"), "{text}");
        assert!(
            lines.contains(&r#"spanlake_blocks_by_level{level="1",signal="logs",tenant="a"} 2"#),
            "{text}"
        );
        // A tenant that is gone disappears from the next scrape.
        *tenants.lock() = vec![TenantBlocks {
            tenant: "b".into(),
            blocks: 1,
            bytes: 10,
            by_level: Vec::new(),
        }];
        let text = telemetry.render();
        assert!(!text.contains(r#"tenant="a""#), "{text}");
        assert!(text.contains(r#"spanlake_blocks{tenant="b"} 1"#), "{text}");
    }

    #[test]
    fn two_instances_count_separately() {
        let (one, two) = (Telemetry::new(), Telemetry::new());
        one.ingest_accepted("demo", 1, 1);
        assert!(
            one.render()
                .contains("spanlake_ingest_spans_received_total")
        );
        assert!(
            !two.render()
                .contains("spanlake_ingest_spans_received_total")
        );
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let telemetry = Telemetry::new();
        telemetry.observe_request("a\\b\"c\nd", "GET", "200", 0.1);
        let text = telemetry.render();
        assert!(text.contains(r#"route="a\\b\"c\nd""#), "{text}");
    }
}
