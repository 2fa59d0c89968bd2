//! The `spanlake` command line: `serve`, `sql`, `gen`, `traceql`, `trace`, `compact`, `blocks`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::{Args, Parser, Subcommand, ValueEnum};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use spanlake::config::Config;
use spanlake::generator::{Generator, MetricsAggregator, TraceShape};
use spanlake::ingest::http::{LOGS_PATH, METRICS_PATH, TRACES_PATH};
use spanlake::query::metrics::MetricsRequest;
use spanlake::query::search::{self, SearchRequest};
use spanlake::schema::otlp::{log_count, point_count, span_count};
use spanlake::server::{self, Server};
use spanlake::tempo::TempoApi;
use spanlake::tempo::json::TempoJson;
use spanlake::tempo::params::SearchParams;
use spanlake::tenant::{ORG_ID_HEADER, SINGLE_TENANT};
use spanlake::time::{TimeRange, duration_arg};

#[derive(Parser)]
#[command(
    name = "spanlake",
    version,
    about = "Analytical query service for OpenTelemetry traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process: OTLP receivers, ingester, HTTP API.
    Serve(ServeArgs),
    /// Run one SQL query against a data directory or a running server and print the result.
    Sql(SqlArgs),
    /// Send deterministic synthetic traces to an OTLP endpoint.
    Gen(GenArgs),
    /// Run a TraceQL search against a data directory, or check or explain a query.
    Traceql(TraceqlArgs),
    /// Print one trace as a tree with its log records and the exemplars that point at it.
    Trace(TraceArgs),
    /// Compact a data directory's blocks and enforce retention once, deleting what they
    /// replace at once. Run it on a directory no server is using; `serve` does the same in
    /// the background.
    Compact(CompactArgs),
    /// List the committed blocks: tenant, signal, shard, level, rows, bytes, time range.
    Blocks(BlocksArgs),
    /// Compare a current window with a baseline per service and operation: what got slower,
    /// fails more, changed its traffic, shows new errors or disappeared, with the evidence.
    /// Exits 0 without findings, 1 with findings below --fail-on, 2 at or above it, 3 on
    /// errors.
    Report(ReportArgs),
    /// Show a running cluster as one of its members sees it.
    Cluster(ClusterArgs),
}

#[derive(Args)]
struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, their state and the shards each holds, from a member's `/api/v1/cluster`.
    Status {
        /// HTTP address of any member.
        #[arg(long, default_value = "http://127.0.0.1:3200")]
        endpoint: String,
        /// `table`, or `json` (the endpoint's answer).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Args)]
struct ReportArgs {
    /// The window under test, START..END: now, now-DURATION, RFC 3339 or Unix seconds.
    /// Default: now-1h..now.
    #[arg(long)]
    current: Option<String>,
    /// The window compared with, as --current. Default: the 24 hours before --current.
    #[arg(long)]
    baseline: Option<String>,
    /// Tenant compared.
    #[arg(long, env = "SPANLAKE_TENANT")]
    tenant: Option<String>,
    /// A TraceQL query whose matched spans are compared, e.g.
    /// '{ resource.deployment.environment = "prod" }'.
    #[arg(long = "where")]
    filter: Option<String>,
    /// Group keys, comma-separated: service.name, name, kind, status, span.KEY, resource.KEY.
    /// Default: service.name,name.
    #[arg(long, value_delimiter = ',')]
    group_by: Option<Vec<String>>,
    /// Span kinds compared, comma-separated, or all. Default: server,consumer.
    #[arg(long, value_delimiter = ',')]
    kinds: Option<Vec<String>>,
    /// Span attributes whose values new in the current window are reported, comma-separated.
    #[arg(long, value_delimiter = ',')]
    new_values_of: Option<Vec<String>>,
    /// Spans a group needs in each window before it is tested (default 30).
    #[arg(long)]
    min_requests: Option<u64>,
    /// Largest Benjamini–Hochberg q-value of a finding (default 0.01).
    #[arg(long)]
    max_q: Option<f64>,
    /// Smallest factor a latency or traffic finding changes by (default 1.25).
    #[arg(long)]
    min_ratio: Option<f64>,
    /// Smallest error-rate change of a finding, as a fraction (default 0.01).
    #[arg(long)]
    min_error_rate_delta: Option<f64>,
    /// A URL with {trace_id} to open exemplar traces in, e.g. a Grafana Explore link.
    #[arg(long)]
    link_template: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    format: spanlake::report::Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The severity from which the exit status is 2.
    #[arg(long, value_enum, default_value = "warning")]
    fail_on: FailOn,
    /// Ask a running server (its HTTP address, e.g. http://127.0.0.1:3200) instead of reading
    /// the data directory.
    #[arg(long, env = "SPANLAKE_SERVER")]
    server: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `--fail-on` severities.
#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    Info,
    Warning,
    Critical,
}

#[derive(Args)]
struct CompactArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct BlocksArgs {
    /// Only this tenant's blocks.
    #[arg(long, env = "SPANLAKE_TENANT")]
    tenant: Option<String>,
    /// `table`, or `json` (one object per block).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct TraceArgs {
    /// The trace id, 32 hex digits.
    trace_id: String,
    /// Ask a running server (its HTTP address, e.g. http://127.0.0.1:3200) instead of reading
    /// the data directory.
    #[arg(long, env = "SPANLAKE_SERVER")]
    server: Option<String>,
    /// Tenant of the trace (X-Scope-OrgID).
    #[arg(long, env = "SPANLAKE_TENANT")]
    tenant: Option<String>,
    /// `text` draws the tree; `json` prints what /api/v1/traces/{id}/correlated answers.
    #[arg(long, value_enum, default_value = "text")]
    format: TraceFormat,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum TraceFormat {
    Text,
    Json,
}

#[derive(Args)]
struct TraceqlArgs {
    /// The TraceQL query, e.g. '{ span.http.response.status_code >= 500 }'.
    query: String,
    /// Only parse and validate: exit 0 when the query is valid, 1 with the error otherwise.
    #[arg(long, conflicts_with = "explain")]
    check: bool,
    /// Print the DataFusion plan the search runs instead of running it.
    #[arg(long)]
    explain: bool,
    /// With --explain: run the plan and print each operator's metrics (EXPLAIN ANALYZE).
    #[arg(long, requires = "explain")]
    analyze: bool,
    /// Start of the search window, Unix seconds.
    #[arg(long)]
    start: Option<u64>,
    /// End of the search window, Unix seconds.
    #[arg(long)]
    end: Option<u64>,
    /// Most traces to return.
    #[arg(long, default_value_t = spanlake::query::search::DEFAULT_LIMIT)]
    limit: usize,
    /// Most spans per spanset.
    #[arg(long, default_value_t = spanlake::query::search::DEFAULT_SPSS)]
    spss: usize,
    /// Metrics queries: the step (`30s`, `1m`); about a 240th of the window by default.
    #[arg(long, value_parser = duration_arg)]
    step: Option<Duration>,
    /// Metrics queries: one value per series over the whole window.
    #[arg(long)]
    instant: bool,
    /// Tenant to search.
    #[arg(long, env = "SPANLAKE_TENANT")]
    tenant: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Settings shared by `serve` and `sql`. Each flag overrides its environment variable, which
/// overrides the config file, which overrides the defaults.
#[derive(Args)]
struct ConfigArgs {
    /// TOML config file.
    #[arg(long, env = "SPANLAKE_CONFIG")]
    config: Option<PathBuf>,
    /// Local state directory (WAL, and blocks unless --storage-url says otherwise).
    #[arg(long, env = "SPANLAKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Block storage: file://PATH or an object-store URL.
    #[arg(long, env = "SPANLAKE_STORAGE_URL")]
    storage_url: Option<String>,
    /// Require X-Scope-OrgID on every request.
    #[arg(long, env = "SPANLAKE_MULTITENANCY")]
    multitenancy: Option<bool>,
    /// Number of shards traces are spread over.
    #[arg(long, env = "SPANLAKE_SHARDS")]
    shards: Option<u32>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tempo HTTP API and SQL-over-HTTP address.
    #[arg(long, env = "SPANLAKE_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// tempopb gRPC address (the HTTP address serves it too, over h2c).
    #[arg(long, env = "SPANLAKE_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// OTLP/gRPC receiver address.
    #[arg(long, env = "SPANLAKE_OTLP_GRPC_LISTEN")]
    otlp_grpc_listen: Option<SocketAddr>,
    /// Arrow Flight SQL address.
    #[arg(long, env = "SPANLAKE_FLIGHT_LISTEN")]
    flight_listen: Option<SocketAddr>,
    /// OTLP/HTTP receiver address.
    #[arg(long, env = "SPANLAKE_OTLP_HTTP_LISTEN")]
    otlp_http_listen: Option<SocketAddr>,
    /// Largest accepted OTLP request, in bytes after decompression.
    #[arg(long, env = "SPANLAKE_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// A trace with no new span for this long is complete (e.g. 5s).
    #[arg(long, env = "SPANLAKE_TRACE_IDLE", value_parser = duration_arg)]
    trace_idle: Option<Duration>,
    /// Flush complete traces at the latest this long after they complete.
    #[arg(long, env = "SPANLAKE_MAX_BLOCK_AGE", value_parser = duration_arg)]
    max_block_age: Option<Duration>,
    /// Flush complete traces once they hold this many bytes.
    #[arg(long, env = "SPANLAKE_MAX_BLOCK_BYTES")]
    max_block_bytes: Option<usize>,
    /// How often the flusher checks for due blocks.
    #[arg(long, env = "SPANLAKE_FLUSH_CHECK", value_parser = duration_arg)]
    flush_check: Option<Duration>,
    /// Memory all queries together may use, in bytes.
    #[arg(long, env = "SPANLAKE_QUERY_MEMORY_LIMIT")]
    query_memory_limit: Option<usize>,
    /// Keep every signal's blocks this long (e.g. 336h; 0s keeps them forever); per-tenant
    /// overrides in the config file still apply.
    #[arg(long, env = "SPANLAKE_RETENTION", value_parser = duration_arg)]
    retention: Option<Duration>,
    /// Also generate realistic synthetic traffic continuously.
    #[arg(long)]
    demo: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
struct SqlArgs {
    /// The query, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1".
    query: String,
    /// Query a running server instead of reading the data directory: its Flight SQL address
    /// (e.g. http://127.0.0.1:8815), or with --http its HTTP address (http://127.0.0.1:3200).
    #[arg(long, env = "SPANLAKE_SERVER")]
    server: Option<String>,
    /// Use the server's SQL-over-HTTP endpoint instead of Flight SQL.
    #[arg(long, requires = "server")]
    http: bool,
    /// Bearer token for Flight SQL.
    #[arg(long, env = "SPANLAKE_TOKEN")]
    token: Option<String>,
    /// Tenant to query (X-Scope-OrgID).
    #[arg(long, env = "SPANLAKE_TENANT")]
    tenant: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Protocol {
    Grpc,
    Http,
}

/// The OTLP signals `spanlake gen` can send.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Signal {
    Traces,
    Logs,
    Metrics,
}

#[derive(Args)]
struct GenArgs {
    /// OTLP endpoint: http://HOST:4317 for gRPC, http://HOST:4318 for HTTP.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Seed of the generator; the same seed sends the same traces.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shape of the generated traces: shop (small web-shop requests, about 4 spans) or wide
    /// (a richer microservice shop, about 14 spans, the search benchmark's dataset).
    #[arg(long, value_enum, default_value = "shop")]
    shape: TraceShape,
    /// Number of traces to send.
    #[arg(long, default_value_t = 100)]
    traces: u64,
    /// Traces per second; 0 sends as fast as the server acknowledges.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// A fault to inject, repeatable: latency:service=S[,op=O],factor=F[,from=T],
    /// errors:service=S,rate=R[,from=T] or traffic:service=S,factor=F[,from=T]; T is Unix
    /// nanoseconds or RFC 3339.
    #[arg(long)]
    inject: Vec<spanlake::generator::Injection>,
    /// Traces per export request (of each signal): 50 generated traces make requests of
    /// about 700 spans, as a batching SDK exporter sends them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Start time of the first trace, Unix nanoseconds (default: now). Traces are spaced
    /// 10 ms apart from there.
    #[arg(long)]
    start_ns: Option<i64>,
    /// Tenant to send as (X-Scope-OrgID).
    #[arg(long)]
    tenant: Option<String>,
    /// Signals to send, comma-separated: traces; logs, written inside the spans of each
    /// trace; metrics, the traces' request counts and durations per service (cumulative, with
    /// exemplars), sent every 100 traces and at the end.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "traces,logs,metrics"
    )]
    signals: Vec<Signal>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.storage_url {
            config.storage_url = Some(v.clone());
        }
        if let Some(v) = self.multitenancy {
            config.multitenancy = v;
        }
        if let Some(v) = self.shards {
            config.ingester.shards = v;
        }
        Ok(config)
    }
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = self.config.load()?;
        let i = &mut config.ingester;
        macro_rules! set {
            ($($flag:expr => $field:expr),* $(,)?) => { $(if let Some(v) = $flag { $field = v; })* };
        }
        set! {
            self.trace_idle => i.trace_idle,
            self.max_block_age => i.max_block_age,
            self.max_block_bytes => i.max_block_bytes,
            self.flush_check => i.flush_check,
            self.http_listen => config.http_listen,
            self.grpc_listen => config.grpc_listen,
            self.otlp_grpc_listen => config.otlp_grpc_listen,
            self.otlp_http_listen => config.otlp_http_listen,
            self.flight_listen => config.flight_listen,
            self.max_request_bytes => config.max_request_bytes,
            self.query_memory_limit => config.query_memory_limit,
        }
        if let Some(keep) = self.retention {
            let r = &mut config.retention;
            (r.traces, r.logs, r.metrics) = (keep, keep, keep);
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Report(args) = cli.command {
        return match runtime.block_on(report(args)) {
            Ok(status) => ExitCode::from(status),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(3)
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Sql(args) => sql(args).await,
            Command::Gen(args) => generate(args).await,
            Command::Traceql(args) => traceql(args).await,
            Command::Trace(args) => trace(args).await,
            Command::Compact(args) => compact(args).await,
            Command::Blocks(args) => blocks(args).await,
            Command::Cluster(args) => cluster(args).await,
            Command::Report(_) => unreachable!("reports exit with their own status"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `request` to `url` as `tenant` and reads the answer's body; a failure status is an
/// error carrying the server's message.
async fn server_body(
    mut request: reqwest::RequestBuilder,
    url: &str,
    tenant: Option<&str>,
) -> anyhow::Result<bytes::Bytes> {
    if let Some(tenant) = tenant {
        request = request.header(ORG_ID_HEADER, tenant);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// [`server_body`] read as JSON.
async fn server_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
    tenant: Option<&str>,
) -> anyhow::Result<T> {
    let body = server_body(request, url, tenant).await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("the answer of {url} is not the JSON expected"))
}

async fn report(args: ReportArgs) -> anyhow::Result<u8> {
    use spanlake::report::{self, ReportOptions, model::Severity};
    let options = ReportOptions {
        current: args.current.clone(),
        baseline: args.baseline.clone(),
        filter: args.filter.clone(),
        group_by: args.group_by.clone(),
        kinds: args.kinds.clone(),
        new_value_keys: args.new_values_of.clone(),
        min_requests: args.min_requests,
        max_q: args.max_q,
        min_ratio: args.min_ratio,
        min_error_rate_delta: args.min_error_rate_delta,
        min_new_value_spans: None,
        link_template: args.link_template.clone(),
    };
    // Checked before anything is opened or sent.
    options.resolve(spanlake::time::now_ns())?;
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(120));
    let tenant = args
        .tenant
        .clone()
        .unwrap_or_else(|| SINGLE_TENANT.to_string());
    let made = match &args.server {
        Some(server) => {
            progress.set_message(format!("asking {server} for the report"));
            let url = format!(
                "{}{}?format=json",
                server.trim_end_matches('/'),
                spanlake::api::http::REPORT_PATH
            );
            let request = reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&options)?);
            server_json(request, &url, args.tenant.as_deref()).await?
        }
        None => {
            progress.set_message("opening the data directory");
            let config = args.config.load()?;
            let opened = server::open(&config, true).await?;
            progress.set_message("comparing the windows");
            report::run(&opened.engine, &tenant, &options, spanlake::time::now_ns()).await?
        }
    };
    progress.set_message("drawing the report");
    let rendered = args.format.render(&made)?;
    progress.finish_and_clear();
    match &args.out {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{rendered}"),
    }
    let fail_on = match args.fail_on {
        FailOn::Info => Severity::Info,
        FailOn::Warning => Severity::Warning,
        FailOn::Critical => Severity::Critical,
    };
    Ok(report::exit_status(&made, fail_on))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let server = Server::start(config, args.demo).await?;
    // Parsable by scripts and tests that start the server on port 0.
    println!(
        "http={} grpc={} otlp_grpc={} otlp_http={} flight={}",
        server.http_addr,
        server.grpc_addr,
        server.otlp_grpc_addr,
        server.otlp_http_addr,
        server.flight_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down: flushing live traces");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let batches = match &args.server {
        Some(server) if args.http => {
            remote_sql(server, args.tenant.as_deref(), &args.query).await?
        }
        Some(server) => flight_sql(server, &args).await?,
        None => {
            let config = args.config.load()?;
            let opened = server::open(&config, true).await?;
            let tenant = args
                .tenant
                .clone()
                .unwrap_or_else(|| SINGLE_TENANT.to_string());
            opened.engine.sql(&tenant, &args.query).await?.1
        }
    };
    let batches = spanlake::schema::display::hex_ids(&batches)?;
    let mut out = Vec::new();
    match args.format {
        Format::Table => {
            out.extend(
                arrow::util::pretty::pretty_format_batches(&batches)?
                    .to_string()
                    .bytes(),
            );
            out.push(b'\n');
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut out);
            for batch in &batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            out.push(b'\n');
        }
        Format::Csv => {
            let mut writer = arrow::csv::Writer::new(&mut out);
            for batch in &batches {
                writer.write(batch)?;
            }
        }
    }
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(())
}

/// Runs the query over Flight SQL.
async fn flight_sql(server: &str, args: &SqlArgs) -> anyhow::Result<Vec<RecordBatch>> {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;
    let address = server.replacen("grpc://", "http://", 1);
    let channel = tonic::transport::Channel::from_shared(address.clone())
        .with_context(|| format!("{server} is not a server address"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(token) = &args.token {
        client.set_token(token.clone());
    }
    if let Some(tenant) = &args.tenant {
        client.set_header(ORG_ID_HEADER, tenant.clone());
    }
    let info = client.execute(args.query.clone(), None).await?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        batches.extend(client.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

async fn remote_sql(
    server: &str,
    tenant: Option<&str>,
    query: &str,
) -> anyhow::Result<Vec<RecordBatch>> {
    let url = format!(
        "{}{}",
        server.trim_end_matches('/'),
        spanlake::api::http::SQL_PATH
    );
    let request = reqwest::Client::new().post(&url).body(query.to_string());
    let body = server_body(request, &url, tenant).await?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

async fn generate(args: GenArgs) -> anyhow::Result<()> {
    /// Traces start this far apart.
    const SPACING_NS: i64 = 10_000_000;
    /// Metrics are exported after this many traces, and after the last.
    const METRICS_EVERY: u64 = 100;
    let sends = |signal| args.signals.contains(&signal);
    let mut generator = Generator::new(args.seed)
        .with_shape(args.shape)
        .with_injections(args.inject.clone());
    let mut metrics = MetricsAggregator::default();
    let start = args
        .start_ns
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let began = Instant::now();
    let otlp = Otlp::connect(&args).await?;
    let (mut spans, mut log_records, mut metric_exports, mut data_points) = (0, 0, 0, 0);
    let mut pending_traces = ExportTraceServiceRequest::default();
    let mut pending_logs = ExportLogsServiceRequest::default();
    for n in 0..args.traces {
        if args.rate > 0.0 {
            let due = began + Duration::from_secs_f64(n as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let trace = generator.trace_at(start + n as i64 * SPACING_NS);
        if sends(Signal::Logs) {
            let logs = generator.logs_for(&trace);
            pending_logs.resource_logs.extend(logs.resource_logs);
        }
        if sends(Signal::Metrics) {
            metrics.observe(&trace);
        }
        if sends(Signal::Traces) {
            pending_traces.resource_spans.extend(trace.resource_spans);
        }
        let sent = n + 1;
        if sent % args.batch == 0 || sent == args.traces {
            if !pending_traces.resource_spans.is_empty() {
                let request = std::mem::take(&mut pending_traces);
                spans += span_count(&request);
                otlp.traces(&args, request).await?;
            }
            if !pending_logs.resource_logs.is_empty() {
                let request = std::mem::take(&mut pending_logs);
                log_records += log_count(&request);
                otlp.logs(&args, request).await?;
            }
        }
        if sends(Signal::Metrics) && (sent % METRICS_EVERY == 0 || sent == args.traces) {
            let export = metrics.export_at(start + sent as i64 * SPACING_NS);
            metric_exports += 1;
            data_points += point_count(&export);
            otlp.metrics(&args, export).await?;
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    if sends(Signal::Traces) {
        eprintln!(
            "sent {} traces ({spans} spans) in {elapsed:.2}s: {:.0} spans/s",
            args.traces,
            spans as f64 / elapsed.max(1e-9)
        );
    }
    if sends(Signal::Logs) {
        eprintln!("sent {log_records} log records");
    }
    if sends(Signal::Metrics) {
        eprintln!("sent {metric_exports} metric exports ({data_points} data points)");
    }
    Ok(())
}

/// Where `spanlake gen` sends: the OTLP trace, logs and metrics services over one gRPC
/// channel, or OTLP/HTTP.
enum Otlp {
    Grpc(tonic::transport::Channel),
    Http(reqwest::Client),
}

impl Otlp {
    async fn connect(args: &GenArgs) -> anyhow::Result<Self> {
        Ok(match args.protocol {
            Protocol::Grpc => Otlp::Grpc(
                tonic::transport::Channel::from_shared(args.endpoint.clone())
                    .with_context(|| format!("{} is not an endpoint URL", args.endpoint))?
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {}", args.endpoint))?,
            ),
            Protocol::Http => Otlp::Http(reqwest::Client::new()),
        })
    }

    async fn traces(
        &self,
        args: &GenArgs,
        request: ExportTraceServiceRequest,
    ) -> anyhow::Result<()> {
        let sent = match self {
            Otlp::Grpc(channel) => TraceServiceClient::new(channel.clone())
                .export(grpc_request(args, request)?)
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            Otlp::Http(http) => post_protobuf(http, args, TRACES_PATH, &request).await,
        };
        sent.with_context(|| failed(args, Signal::Traces))
    }

    async fn logs(&self, args: &GenArgs, request: ExportLogsServiceRequest) -> anyhow::Result<()> {
        let sent = match self {
            Otlp::Grpc(channel) => LogsServiceClient::new(channel.clone())
                .export(grpc_request(args, request)?)
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            Otlp::Http(http) => post_protobuf(http, args, LOGS_PATH, &request).await,
        };
        sent.with_context(|| failed(args, Signal::Logs))
    }

    async fn metrics(
        &self,
        args: &GenArgs,
        request: ExportMetricsServiceRequest,
    ) -> anyhow::Result<()> {
        let sent = match self {
            Otlp::Grpc(channel) => MetricsServiceClient::new(channel.clone())
                .export(grpc_request(args, request)?)
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            Otlp::Http(http) => post_protobuf(http, args, METRICS_PATH, &request).await,
        };
        sent.with_context(|| failed(args, Signal::Metrics))
    }
}

/// The context of a failed export: what and where, and how to send less.
fn failed(args: &GenArgs, signal: Signal) -> String {
    let name = signal
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    format!(
        "sending {name} to {} failed (--signals picks which of traces, logs, metrics to send)",
        args.endpoint
    )
}

/// A gRPC request as the tenant of `args`, if any.
fn grpc_request<T>(args: &GenArgs, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = &args.tenant {
        let value: tonic::metadata::AsciiMetadataValue = t
            .parse()
            .with_context(|| format!("tenant {t:?} is not a valid header value"))?;
        request.metadata_mut().insert(ORG_ID_HEADER, value);
    }
    Ok(request)
}

/// POSTs `message` as protobuf to `path` under the endpoint of `args` (OTLP/HTTP), as its
/// tenant if any.
async fn post_protobuf(
    http: &reqwest::Client,
    args: &GenArgs,
    path: &str,
    message: &impl Message,
) -> anyhow::Result<()> {
    let url = format!("{}{path}", args.endpoint.trim_end_matches('/'));
    let mut call = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(message.encode_to_vec());
    if let Some(t) = &args.tenant {
        call = call.header(ORG_ID_HEADER, t);
    }
    let response = call
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let opened = server::open(&config, false).await?;
    let lifecycle = server::lifecycle(&config, &opened.storage, &opened.catalog);
    let mut total = spanlake::storage::lifecycle::LifecycleReport::default();
    loop {
        let report = lifecycle.run_once(spanlake::time::now_ns()).await?;
        total.compactions += report.compactions;
        total.compacted_blocks += report.compacted_blocks;
        total.expired_blocks += report.expired_blocks;
        if report.compactions == 0 {
            break;
        }
    }
    total.deleted_blocks = lifecycle.delete_all_retired().await?;
    println!(
        "{} compactions replaced {} blocks; retention removed {} blocks; {} blocks deleted",
        total.compactions, total.compacted_blocks, total.expired_blocks, total.deleted_blocks
    );
    Ok(())
}

async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let ClusterCommand::Status { endpoint, format } = args.command;
    let url = format!(
        "{}{}",
        endpoint.trim_end_matches('/'),
        spanlake::api::http::CLUSTER_PATH
    );
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    match format {
        Format::Table => {}
        Format::Json => {
            println!("{}", String::from_utf8_lossy(&body));
            return Ok(());
        }
        Format::Csv => bail!("cluster status prints as table or json, not csv"),
    }
    let status: spanlake::cluster::ClusterStatus = serde_json::from_slice(&body)?;
    println!(
        "as seen by {} (replication factor {}, writes need {})",
        status.self_name, status.replication_factor, status.write_consistency
    );
    println!(
        "{:<16} {:<8} {:<22} {:<22} {:>7} {:>8} {:>5}  error",
        "member", "state", "http", "internal", "primary", "replicas", "hints"
    );
    for member in &status.members {
        println!(
            "{:<16} {:<8} {:<22} {:<22} {:>7} {:>8} {:>5}  {}",
            member.name,
            member.state,
            member.http,
            member.internal,
            member.primary_shards.len(),
            member.replica_shards.len(),
            member.hints_kept,
            member.error.as_deref().unwrap_or("")
        );
    }
    for shard in status.shards.iter().filter(|s| !s.missing_rows.is_empty()) {
        println!(
            "shard {}: {} miss rows until their hints arrive; read from {}",
            shard.shard,
            shard.missing_rows.join(", "),
            shard.reader.as_deref().unwrap_or("no member")
        );
    }
    let unread: Vec<String> = status
        .shards
        .iter()
        .filter(|s| s.reader.is_none())
        .map(|s| s.shard.to_string())
        .collect();
    if !unread.is_empty() {
        println!(
            "shards with no holder up (answers leave them out): {}",
            unread.join(", ")
        );
    }
    Ok(())
}

async fn blocks(args: BlocksArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let opened = server::open(&config, true).await?;
    let catalog = &opened.catalog;
    let tenants = match args.tenant {
        Some(tenant) => vec![tenant],
        None => catalog.tenants(),
    };
    let mut blocks: Vec<_> = tenants.iter().flat_map(|t| catalog.all_blocks(t)).collect();
    blocks.sort_by(|a, b| {
        (&a.tenant, a.signal, a.shard, a.min_time_ns).cmp(&(
            &b.tenant,
            b.signal,
            b.shard,
            b.min_time_ns,
        ))
    });
    let time = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339();
    match args.format {
        Format::Json => {
            for block in &blocks {
                println!("{}", serde_json::to_string(block.as_ref())?);
            }
        }
        Format::Table | Format::Csv => {
            println!(
                "{:<16} {:<8} {:>5} {:>5} {:>10} {:>12}  {:<35} {:<35} block",
                "tenant", "signal", "shard", "level", "rows", "bytes", "from", "to"
            );
            for b in &blocks {
                println!(
                    "{:<16} {:<8} {:>5} {:>5} {:>10} {:>12}  {:<35} {:<35} {}",
                    b.tenant,
                    b.signal.name(),
                    b.shard,
                    b.compaction_level,
                    b.rows,
                    b.bytes(),
                    time(b.min_time_ns),
                    time(b.max_time_ns),
                    b.block_id
                );
            }
        }
    }
    Ok(())
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    use spanlake::query::correlate::Correlation;
    let id = spanlake::ids::parse_trace_id(&args.trace_id)?;
    let correlation: Correlation = match &args.server {
        Some(server) => {
            let path = spanlake::api::http::CORRELATED_PATH.replace("{id}", &args.trace_id);
            let url = format!("{}{path}", server.trim_end_matches('/'));
            server_json(
                reqwest::Client::new().get(&url),
                &url,
                args.tenant.as_deref(),
            )
            .await?
        }
        None => {
            let config = args.config.load()?;
            let opened = server::open(&config, true).await?;
            let tenant = args.tenant.unwrap_or_else(|| SINGLE_TENANT.to_string());
            opened.engine.correlate(&tenant, id).await?
        }
    };
    match args.format {
        TraceFormat::Json => println!("{}", serde_json::to_string_pretty(&correlation)?),
        TraceFormat::Text => print!("{}", correlation.render(terminal_width())),
    }
    Ok(())
}

/// The terminal's width from `COLUMNS`, 120 when unknown.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120)
}

async fn traceql(args: TraceqlArgs) -> anyhow::Result<()> {
    use spanlake::traceql::{self, CheckError};
    let query = match traceql::check(&args.query) {
        Ok(query) => query,
        Err(e @ CheckError::Parse(_)) => bail!("{e}"),
        Err(e) if e.is_unsupported() => bail!("unsupported: {e}"),
        Err(e) => bail!("invalid: {e}"),
    };
    if args.check {
        println!("valid: {query}");
        return Ok(());
    }
    let config = args.config.load()?;
    let opened = server::open(&config, true).await?;
    let tenant = args.tenant.unwrap_or_else(|| SINGLE_TENANT.to_string());
    let api = TempoApi::new(opened.engine.clone(), config.query.clone(), false);
    if matches!(query.body, spanlake::traceql::ast::Body::Metrics(_)) {
        if args.explain {
            bail!("--explain shows search plans; this is a metrics query");
        }
        // Printed as Tempo's /api/metrics/query_range (or /api/metrics/query) answers; the
        // window is the last hour unless given.
        let now = spanlake::time::now_ns();
        let end = args.end.map_or(now, spanlake::time::seconds_to_ns);
        let start = args.start.map_or(
            end - spanlake::query::metrics::DEFAULT_WINDOW_NS,
            spanlake::time::seconds_to_ns,
        );
        let limits = api.metrics_limits();
        let tenants = [tenant];
        let json = if args.instant {
            let request = MetricsRequest::instant(args.query.clone(), (start, end), &limits, now)?;
            api.metrics_query_instant(&tenants, &request)
                .await?
                .tempo_json()
        } else {
            let step = args.step.map(spanlake::time::duration_ns);
            let request = MetricsRequest::range(
                args.query.clone(),
                (start, end),
                step,
                None,
                0,
                &limits,
                now,
            )?;
            api.metrics_query_range(&tenants, &request)
                .await?
                .tempo_json()
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    // Without a window, all of time.
    let request = SearchRequest {
        query: args.query.clone(),
        range: TimeRange::from_seconds(args.start, args.end),
        limit: args.limit,
        spss: args.spss,
    };
    if args.explain {
        println!(
            "{}",
            search::explain(&opened.engine, &tenant, &request, args.analyze).await?
        );
        return Ok(());
    }
    // Printed as Tempo's /api/search answers.
    let params = SearchParams {
        request,
        tag_search: false,
        explain: None,
    };
    let response = api.search(&[tenant], &params, |_, _| {}).await?;
    println!("{}", serde_json::to_string_pretty(&response.tempo_json())?);
    Ok(())
}
