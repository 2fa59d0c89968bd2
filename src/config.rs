//! Configuration: defaults, overridden by a TOML file, overridden by environment variables and
//! flags (flags win over their environment variable). The defaults of every configurable
//! setting live here; protocol constants live with their protocol.
//!
//! ```toml
//! data_dir = "./data"
//! http_listen = "0.0.0.0:3200"
//! multitenancy = false
//!
//! [ingester]
//! trace_idle = "5s"
//! max_block_age = "30s"
//!
//! [query]
//! max_bytes_per_trace = 5000000
//! timeout = "1m"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default Tempo-compatible HTTP API port.
pub const DEFAULT_HTTP_PORT: u16 = 3200;
/// Default OTLP/gRPC port.
pub const DEFAULT_OTLP_GRPC_PORT: u16 = 4317;
/// Default OTLP/HTTP port.
pub const DEFAULT_OTLP_HTTP_PORT: u16 = 4318;
/// Default port of the tempopb gRPC services.
pub const DEFAULT_GRPC_PORT: u16 = 9095;
/// Default Arrow Flight SQL port.
pub const DEFAULT_FLIGHT_PORT: u16 = 8815;
/// Default port of the cluster's internal gRPC services (replicated pushes, query stages).
pub const DEFAULT_CLUSTER_PORT: u16 = 9096;

/// The whole configuration of a spanlake process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Root of local state: the WAL lives in `{data_dir}/wal`, blocks default to
    /// `{data_dir}/blocks`.
    pub data_dir: PathBuf,
    /// Where blocks are stored: `file://PATH` or an object-store URL. Default: `{data_dir}/blocks`.
    pub storage_url: Option<String>,
    /// Options of the object store `storage_url` names (e.g. `aws_endpoint`,
    /// `aws_allow_http`); credentials usually come from the environment instead.
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// A local directory caching ranged reads of a remote `storage_url` (footers, page
    /// indexes, row groups); none by default.
    pub storage_cache_dir: Option<PathBuf>,
    /// Size of that cache, about.
    pub storage_cache_bytes: u64,
    /// Tempo HTTP API, `/ready` and SQL over HTTP.
    pub http_listen: SocketAddr,
    /// tempopb gRPC services (they are also served on the HTTP port over h2c).
    pub grpc_listen: SocketAddr,
    /// OTLP/gRPC receiver.
    pub otlp_grpc_listen: SocketAddr,
    /// OTLP/HTTP receiver.
    pub otlp_http_listen: SocketAddr,
    /// Arrow Flight SQL and plain Flight.
    pub flight_listen: SocketAddr,
    /// The cluster's internal gRPC services; only bound when `[cluster]` is set.
    pub cluster_listen: SocketAddr,
    /// When on, every request must name its tenant in `X-Scope-OrgID`.
    pub multitenancy: bool,
    /// Largest accepted OTLP request body, after decompression.
    pub max_request_bytes: usize,
    /// Memory all queries together may use.
    pub query_memory_limit: usize,
    /// Memory one tenant's queries together may use; all of `query_memory_limit` when unset.
    pub query_memory_limit_per_tenant: Option<usize>,
    /// Partitions a query's scans and aggregates are split into; the number of cores when
    /// unset.
    pub query_partitions: Option<usize>,
    pub ingester: IngesterSettings,
    pub compaction: CompactionSettings,
    pub retention: RetentionSettings,
    pub query: QuerySettings,
    pub flight: FlightSettings,
    /// Reports `serve` makes on a schedule, written to the block store under `reports/`.
    pub reports: Vec<ScheduledReport>,
    /// Membership of a cluster; a single node when unset.
    pub cluster: Option<ClusterSettings>,
}

/// A static cluster: who the members are, how many hold each shard, and when a write counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's name among `members`.
    #[serde(rename = "self")]
    pub self_name: String,
    /// Every member, this node included.
    pub members: Vec<MemberSettings>,
    /// How many members hold each shard.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    /// How many of a shard's holders must have made a write durable before it is acknowledged.
    #[serde(default)]
    pub write_consistency: WriteConsistency,
    /// How often each member checks the others.
    #[serde(default = "default_health_check", with = "crate::time::serde_duration")]
    pub health_check: Duration,
    /// Whether a query may answer without a shard none of whose holders is up (flagged
    /// partial); when false, such a query fails instead. Requests may ask for strictness with
    /// `partial=false`.
    #[serde(default = "default_partial_results")]
    pub partial_results: bool,
}

/// One member of a cluster: its name and where the others reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    pub name: String,
    /// `host:port` of its HTTP API (health checks, `/api/v1/cluster`).
    pub http: String,
    /// `host:port` of its cluster services (`cluster_listen`).
    pub internal: String,
}

/// How many holders of a shard acknowledge a write before the client is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteConsistency {
    /// A majority of the shard's holders; the others get the rows later as hints, and reads
    /// avoid them until then (see `cluster::handoff`). With a replication factor of 1 or 2 a
    /// majority is every holder.
    #[default]
    Quorum,
    /// Every holder.
    All,
}

fn default_replication_factor() -> usize {
    1
}

fn default_health_check() -> Duration {
    Duration::from_secs(1)
}

fn default_partial_results() -> bool {
    true
}

/// A report `serve` makes on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledReport {
    /// Names the report's outputs: `reports/{tenant}/{name}/{time}.{format}`.
    pub name: String,
    /// Cron's five fields (minute hour day-of-month month day-of-week, UTC), or `@hourly`,
    /// `@daily`, `@weekly`.
    pub schedule: String,
    /// The tenant compared; the single tenant when unset.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Outputs written each time: `json`, `md`, `html`.
    #[serde(default = "default_report_formats")]
    pub formats: Vec<String>,
    /// What the report compares, as `spanlake report` and `POST /api/v1/report` take it.
    #[serde(default)]
    pub options: ReportOptions,
}

fn default_report_formats() -> Vec<String> {
    vec!["json".into(), "html".into()]
}

/// Who may use Flight SQL, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlightSettings {
    /// Bearer tokens and the tenant each one reads.
    pub tokens: std::collections::BTreeMap<String, String>,
    /// Users who may sign in with basic auth (the handshake answers a bearer token).
    pub users: Vec<FlightUser>,
    /// Queries one tenant may run at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_queries: usize,
    /// Prepared statements one session holds at once.
    pub max_prepared_statements: usize,
    /// A prepared statement unused for this long is closed.
    #[serde(with = "crate::time::serde_duration")]
    pub prepared_statement_ttl: Duration,
    /// PEM certificate chain: with `tls_key`, Flight is served over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// A Flight SQL user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightUser {
    /// Name given in basic auth.
    pub username: String,
    /// Password given in basic auth.
    pub password: String,
    /// The tenant the user reads.
    pub tenant: String,
}

impl Default for FlightSettings {
    fn default() -> Self {
        Self {
            tokens: Default::default(),
            users: Vec::new(),
            max_concurrent_queries: 16,
            max_prepared_statements: 1024,
            prepared_statement_ttl: Duration::from_secs(3600),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Limits of the Tempo query API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySettings {
    /// Largest trace returned by trace-by-id, as encoded protobuf: v1 answers 422 above it,
    /// v2 a partial trace.
    pub max_bytes_per_trace: usize,
    /// Longest `start`..`end` window a search or tag request may ask for.
    #[serde(with = "crate::time::serde_duration")]
    pub max_search_duration: Duration,
    /// Window searched when a request gives neither `start` nor `end`: the most recent data.
    #[serde(with = "crate::time::serde_duration")]
    pub default_search_window: Duration,
    /// A query API request running longer than this is cancelled (HTTP 504, gRPC
    /// DEADLINE_EXCEEDED).
    #[serde(with = "crate::time::serde_duration")]
    pub timeout: Duration,
    /// Most traces one search may return.
    pub max_result_limit: u32,
    /// Most spans per spanset one search may ask for.
    pub max_spans_per_span_set: u32,
    /// Longest `start`..`end` window of a TraceQL metrics query.
    #[serde(with = "crate::time::serde_duration")]
    pub max_metrics_duration: Duration,
    /// The end of a metrics query is clamped to this long before now (Tempo's
    /// `query_end_cutoff`); 0 reads up to the present.
    #[serde(with = "crate::time::serde_duration")]
    pub metrics_end_cutoff: Duration,
    /// Most series one metrics query returns; beyond it the answer is partial.
    pub max_metrics_series: u32,
    /// Memory for decoded block columns kept between searches (spans and traces), so that
    /// searching recent blocks again does not decode their pages again; 0 keeps none.
    pub block_cache_bytes: u64,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            max_bytes_per_trace: 5_000_000,
            max_search_duration: Duration::from_secs(168 * 3600),
            default_search_window: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(60),
            max_result_limit: 262_144,
            max_spans_per_span_set: 100,
            max_metrics_duration: Duration::from_secs(24 * 3600),
            metrics_end_cutoff: Duration::from_secs(30),
            block_cache_bytes: 1 << 30,
            max_metrics_series: 10_000,
        }
    }
}

/// When traces are complete and blocks are cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterSettings {
    /// A trace with no new span for this long is complete.
    #[serde(with = "crate::time::serde_duration")]
    pub trace_idle: Duration,
    /// Complete traces are flushed at the latest this long after completing.
    #[serde(with = "crate::time::serde_duration")]
    pub max_block_age: Duration,
    /// Complete traces are flushed once they take this many bytes of memory.
    pub max_block_bytes: usize,
    /// How often the flusher checks whether a block is due.
    #[serde(with = "crate::time::serde_duration")]
    pub flush_check: Duration,
    /// How long, at most, flushed rows stay readable live for queries planned before the
    /// flush; a query whose plan is older when it reads live rows fails and is run again.
    /// Without such queries the rows are released as soon as their block is committed.
    #[serde(with = "crate::time::serde_duration")]
    pub flushed_grace: Duration,
    /// Number of shards; a trace's shard is a hash of its id.
    pub shards: u32,
    /// Most bytes of memory one tenant's live rows not yet cut into blocks may take; exports
    /// past it are refused with 429 / `RESOURCE_EXHAUSTED` before anything is written.
    pub max_live_bytes_per_tenant: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            storage_url: None,
            storage_options: Default::default(),
            storage_cache_dir: None,
            storage_cache_bytes: 10 << 30,
            http_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GRPC_PORT)),
            otlp_grpc_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_OTLP_GRPC_PORT)),
            otlp_http_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_OTLP_HTTP_PORT)),
            flight_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_FLIGHT_PORT)),
            cluster_listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_CLUSTER_PORT)),
            multitenancy: false,
            max_request_bytes: 16 << 20,
            query_memory_limit: 2 << 30,
            query_memory_limit_per_tenant: None,
            query_partitions: None,
            ingester: IngesterSettings::default(),
            compaction: CompactionSettings::default(),
            retention: RetentionSettings::default(),
            query: QuerySettings::default(),
            flight: FlightSettings::default(),
            reports: Vec::new(),
            cluster: None,
        }
    }
}

/// A report's options as every edge takes them; unset ones take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportOptions {
    /// `A..B`: `now`, `now-1h`, RFC 3339 or Unix seconds; default the last hour.
    pub current: Option<String>,
    /// As `current`; default the 24 hours before the current window.
    pub baseline: Option<String>,
    /// A TraceQL spanset query scoping the spans compared.
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// Group keys, default `service.name`, `name`.
    pub group_by: Option<Vec<String>>,
    /// Span kinds compared, default `server`, `consumer`; `["all"]` for every kind.
    pub kinds: Option<Vec<String>>,
    /// Attributes checked for new values, default `error.type` and the HTTP and gRPC status codes.
    pub new_value_keys: Option<Vec<String>>,
    /// Overrides of the report's thresholds (`docs/reports.md`).
    pub min_requests: Option<u64>,
    pub max_q: Option<f64>,
    pub min_ratio: Option<f64>,
    pub min_error_rate_delta: Option<f64>,
    pub min_new_value_spans: Option<u64>,
    /// A URL with `{trace_id}` for exemplar links, e.g. a Grafana Explore URL.
    pub link_template: Option<String>,
}

/// How `serve` compacts blocks in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionSettings {
    /// Whether `serve` compacts and enforces retention at all.
    pub enabled: bool,
    /// How often compaction and retention run.
    #[serde(with = "crate::time::serde_duration")]
    pub interval: Duration,
    /// Only blocks whose latest rows fall in the same window of this length are merged.
    #[serde(with = "crate::time::serde_duration")]
    pub window: Duration,
    /// A merged block holds at most about this many rows; bigger blocks are left alone.
    pub max_block_rows: u64,
    /// Replaced and expired blocks are deleted this long after they left the catalog: longer
    /// than any query runs.
    #[serde(with = "crate::time::serde_duration")]
    pub delete_grace: Duration,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            window: Duration::from_secs(3600),
            max_block_rows: 1_000_000,
            delete_grace: Duration::from_secs(300),
        }
    }
}

/// How long each signal's blocks are kept; `0s` keeps them forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    #[serde(with = "crate::time::serde_duration")]
    pub traces: Duration,
    #[serde(with = "crate::time::serde_duration")]
    pub logs: Duration,
    #[serde(with = "crate::time::serde_duration")]
    pub metrics: Duration,
    /// Per-tenant overrides.
    pub tenants: std::collections::BTreeMap<String, TenantRetention>,
}

/// One tenant's retention, where it differs from the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantRetention {
    #[serde(
        with = "crate::time::serde_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub traces: Option<Duration>,
    #[serde(
        with = "crate::time::serde_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub logs: Option<Duration>,
    #[serde(
        with = "crate::time::serde_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let two_weeks = Duration::from_secs(14 * 24 * 3600);
        Self {
            traces: two_weeks,
            logs: two_weeks,
            metrics: two_weeks,
            tenants: Default::default(),
        }
    }
}

impl Default for IngesterSettings {
    fn default() -> Self {
        Self {
            trace_idle: Duration::from_secs(5),
            max_block_age: Duration::from_secs(30),
            max_block_bytes: 512 << 20,
            flush_check: Duration::from_secs(1),
            flushed_grace: Duration::from_secs(120),
            shards: 1,
            max_live_bytes_per_tenant: 4 << 30,
        }
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The defaults with data in `data_dir` and every listener on a port of 127.0.0.1 that the
    /// system picks: a server that can run beside any other, as tests and benchmarks run it.
    pub fn loopback(data_dir: &Path) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_dir: data_dir.to_path_buf(),
            http_listen: any,
            grpc_listen: any,
            otlp_grpc_listen: any,
            otlp_http_listen: any,
            flight_listen: any,
            cluster_listen: any,
            ..Self::default()
        }
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The storage URL in effect.
    pub fn storage_url(&self) -> String {
        self.storage_url
            .clone()
            .unwrap_or_else(|| format!("file://{}", self.data_dir.join("blocks").display()))
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ingester.shards == 0 {
            return Err(ConfigError::Invalid(
                "ingester.shards must be at least 1".into(),
            ));
        }
        if self.ingester.flush_check.is_zero() {
            return Err(ConfigError::Invalid(
                "ingester.flush_check must be above zero".into(),
            ));
        }
        if self.compaction.interval.is_zero() || self.compaction.window.is_zero() {
            return Err(ConfigError::Invalid(
                "compaction.interval and compaction.window must be above zero".into(),
            ));
        }
        if self.query.timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "query.timeout must be above zero".into(),
            ));
        }
        if self.flight.max_concurrent_queries == 0 {
            return Err(ConfigError::Invalid(
                "flight.max_concurrent_queries must be at least 1".into(),
            ));
        }
        if self.flight.tls_cert.is_some() != self.flight.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "flight.tls_cert and flight.tls_key go together: give both or neither".into(),
            ));
        }
        for (token, tenant) in &self.flight.tokens {
            if token.is_empty() || tenant.is_empty() {
                return Err(ConfigError::Invalid(
                    "flight.tokens: tokens and tenants must not be empty".into(),
                ));
            }
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_request_bytes must be above zero".into(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate(self.ingester.shards)?;
        }
        Ok(())
    }
}

impl ClusterSettings {
    fn validate(&self, shards: u32) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(format!("cluster: {message}")));
        let mut names = std::collections::BTreeSet::new();
        for member in &self.members {
            if member.name.is_empty() || !names.insert(member.name.as_str()) {
                return invalid(format!(
                    "member names must be unique and not empty; {:?} is not",
                    member.name
                ));
            }
            for address in [&member.http, &member.internal] {
                let port = address
                    .rsplit_once(':')
                    .map(|(_, port)| port.parse::<u16>());
                if !matches!(port, Some(Ok(_))) {
                    return invalid(format!(
                        "member {:?}: address {address:?} is not host:port",
                        member.name
                    ));
                }
            }
        }
        if !names.contains(self.self_name.as_str()) {
            return invalid(format!(
                "self = {:?} is not among the members ({})",
                self.self_name,
                names.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if self.replication_factor == 0 || self.replication_factor > self.members.len() {
            return invalid(format!(
                "replication_factor must be between 1 and the number of members ({}), not {}",
                self.members.len(),
                self.replication_factor
            ));
        }
        if (shards as usize) < self.members.len() {
            return invalid(format!(
                "ingester.shards ({shards}) must be at least the number of members ({}); \
                 a few shards per member spread the load evenly",
                self.members.len()
            ));
        }
        if self.health_check.is_zero() {
            return invalid("health_check must be above zero".into());
        }
        Ok(())
    }

    /// How many holders of a shard must acknowledge a write.
    pub fn write_quorum(&self) -> usize {
        match self.write_consistency {
            WriteConsistency::Quorum => self.replication_factor / 2 + 1,
            WriteConsistency::All => self.replication_factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config: Config =
            toml::from_str("multitenancy = true\n[ingester]\ntrace_idle = \"2s\"\n").unwrap();
        assert!(config.multitenancy);
        assert_eq!(config.ingester.trace_idle, Duration::from_secs(2));
        assert_eq!(
            config.ingester.max_block_age,
            IngesterSettings::default().max_block_age
        );
        assert_eq!(config.http_listen.port(), DEFAULT_HTTP_PORT);
    }

    #[test]
    fn replication_needs_as_many_members_and_takes_either_consistency() {
        let member = |name: &str, port: u16| {
            format!(
                "{{ name = \"{name}\", http = \"h:{port}\", internal = \"h:{}\" }}",
                port + 1
            )
        };
        let text = |factor: usize, consistency: &str| {
            format!(
                "[ingester]\nshards = 8\n[cluster]\nself = \"a\"\nreplication_factor = {factor}\n\
                 write_consistency = \"{consistency}\"\nmembers = [{}, {}, {}]\n",
                member("a", 1000),
                member("b", 2000),
                member("c", 3000)
            )
        };
        let check = |factor, consistency| {
            toml::from_str::<Config>(&text(factor, consistency))
                .unwrap()
                .validate()
        };
        assert!(check(2, "quorum").is_ok());
        assert!(check(3, "all").is_ok());
        assert!(check(3, "quorum").is_ok());
        let refused = check(4, "all").unwrap_err().to_string();
        assert!(refused.contains("replication_factor"), "{refused}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("http_port = 1").is_err());
    }
}
