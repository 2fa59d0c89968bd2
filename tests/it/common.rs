//! Shared helpers: a real server on 127.0.0.1:0 with its data in a temp dir, and clients.

use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake::config::Config;
use spanlake::query::QueryEngine;
pub use spanlake::schema::otlp::span_count;
use spanlake::server::Server;
use tempfile::TempDir;

/// The service's parts opened on `dir` with [`test_config`], but holding every trace live
/// until a test flushes: nothing is idle or old enough to cut within a test.
pub async fn open_holding_live(dir: &std::path::Path) -> spanlake::server::Opened {
    let mut config = test_config(dir);
    config.ingester.trace_idle = Duration::from_secs(3600);
    config.ingester.max_block_age = Duration::from_secs(3600);
    spanlake::server::open(&config, false).await.unwrap()
}

/// A config for tests: loopback ports chosen by the OS, data in `dir`, fast flushes.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::loopback(dir);
    config.ingester.flush_check = Duration::from_millis(50);
    config.ingester.trace_idle = Duration::from_millis(100);
    config.ingester.max_block_age = Duration::from_millis(100);
    // Test data is stamped in the past: keep it, whatever its age.
    config.retention.traces = Duration::ZERO;
    config.retention.logs = Duration::ZERO;
    config.retention.metrics = Duration::ZERO;
    config
}

/// A running in-process server and the directory holding its data.
pub struct TestServer {
    pub server: Server,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let server = Server::start(config, false).await.unwrap();
        Self { server, dir }
    }

    pub fn otlp_http_url(&self) -> String {
        format!("http://{}/v1/traces", self.server.otlp_http_addr)
    }

    pub fn otlp_grpc_url(&self) -> String {
        format!("http://{}", self.server.otlp_grpc_addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.server.http_addr)
    }

    pub async fn grpc_client(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(self.otlp_grpc_url())
            .await
            .unwrap()
    }

    /// Runs SQL in-process for the single tenant.
    pub async fn sql(&self, query: &str) -> Vec<RecordBatch> {
        self.server
            .engine
            .sql(spanlake::tenant::SINGLE_TENANT, query)
            .await
            .unwrap()
            .1
    }

    /// Runs a `SELECT count(*) …` and returns the count.
    pub async fn count(&self, query: &str) -> i64 {
        single_i64(&self.sql(query).await)
    }
}

/// The only value of a one-row, one-column Int64 result.
pub fn single_i64(batches: &[RecordBatch]) -> i64 {
    let rows: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(rows.len(), 1, "expected one row, got {rows:?}");
    rows[0]
}

/// Runs SQL against a server's HTTP API and decodes the Arrow IPC answer.
pub async fn http_sql(base: &str, query: &str) -> Result<Vec<RecordBatch>, (u16, String)> {
    let response = reqwest::Client::new()
        .post(format!("{base}{}", spanlake::api::http::SQL_PATH))
        .body(query.to_string())
        .send()
        .await
        .map_err(|e| (0, e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| (status, e.to_string()))?;
    if status != 200 {
        return Err((status, String::from_utf8_lossy(&body).into_owned()));
    }
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    Ok(reader.collect::<Result<Vec<_>, _>>().unwrap())
}

/// Runs a `SELECT count(*) …` for the single tenant through `engine`.
pub async fn engine_count(engine: &QueryEngine, query: &str) -> i64 {
    single_i64(
        &engine
            .sql(spanlake::tenant::SINGLE_TENANT, query)
            .await
            .unwrap()
            .1,
    )
}

/// A `spanlake serve` child process and the addresses it reported.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub http: String,
    pub otlp_grpc: String,
}

/// Starts the `spanlake` binary with its data in `data`, on loopback ports chosen by the OS,
/// with `extra` flags, and reads back the addresses it prints.
pub fn spawn_serve(data: &std::path::Path, extra: &[&str]) -> ServeProcess {
    spawn_serve_with_env(data, extra, &[])
}

/// [`spawn_serve`] with extra environment variables for the child.
pub fn spawn_serve_with_env(
    data: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ServeProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
    command
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--http-listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", "127.0.0.1:0"])
        .args(["--flight-listen", "127.0.0.1:0"])
        // Test data is stamped in the past: keep it, whatever its age.
        .args(["--retention", "0s"])
        .args(extra)
        .envs(env.iter().copied());
    spawn_serving(command)
}

/// Starts `command`, a `spanlake serve`, and reads back the addresses it prints first.
pub fn spawn_serving(command: std::process::Command) -> ServeProcess {
    let described = format!("{command:?}");
    try_spawn_serving(command).unwrap_or_else(|| panic!("{described} exited before serving"))
}

/// [`spawn_serving`], or `None` when the process exits before it prints its addresses (as it
/// does when a port it was given is taken).
pub fn try_spawn_serving(mut command: std::process::Command) -> Option<ServeProcess> {
    use std::io::BufRead;
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if read == 0 {
        child.wait().unwrap();
        return None;
    }
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_string()
    };
    Some(ServeProcess {
        http: format!("http://{}", addr("http")),
        otlp_grpc: format!("http://{}", addr("otlp_grpc")),
        child,
    })
}

/// Runs `command` to completion off the async runtime and returns its stdout; panics with its
/// stderr when it fails.
pub async fn run_to_success(mut command: std::process::Command) -> Vec<u8> {
    let described = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{described} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The Python of the end-to-end tests: `SPANLAKE_TEST_PYTHON`, else the project's `.venv`
/// that `scripts/test` sets up with `tests/python/requirements.txt`.
pub fn python() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("SPANLAKE_TEST_PYTHON") {
        return std::path::PathBuf::from(path);
    }
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test (it creates the venv with the test clients) or set SPANLAKE_TEST_PYTHON",
        venv.display()
    );
    venv
}
