//! Throughput of one large `SELECT` streamed over Arrow Flight SQL and over SQL over HTTP
//! (Arrow IPC), from a server in the same process: rows/s and the peak resident memory of the
//! process while each answer streams. Printed, never asserted.
//!
//! `cargo bench --bench flight_sql`; `SPANLAKE_BENCH_ROWS` sets the answer's size (default
//! 10,000,000 rows of two Int64 columns).

use std::net::SocketAddr;
use std::time::Instant;

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::StreamExt;
use spanlake::config::Config;
use spanlake::server::Server;

/// The process's peak resident memory since the last reset, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts a new peak-memory measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn report(door: &str, rows: usize, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib().map_or("unknown".to_string(), |m| format!("{m:.0} MiB"));
    println!(
        "{door}: {rows} rows in {seconds:.2}s = {:.2} M rows/s, peak RSS {peak}",
        rows as f64 / seconds / 1e6
    );
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SPANLAKE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.http_listen = any;
    config.grpc_listen = any;
    config.otlp_grpc_listen = any;
    config.otlp_http_listen = any;
    config.flight_listen = any;
    let server = Server::start(config, false).await.unwrap();
    let sql = format!("SELECT value, value * 2 AS twice FROM generate_series(1, {rows})");

    reset_peak_rss();
    let started = Instant::now();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    let info = client.execute(sql.clone(), None).await.unwrap();
    let mut received = 0;
    for endpoint in info.endpoint {
        let mut stream = client.do_get(endpoint.ticket.unwrap()).await.unwrap();
        while let Some(batch) = stream.next().await {
            received += batch.unwrap().num_rows();
        }
    }
    report("Flight SQL", received, started);

    reset_peak_rss();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}{}",
            server.http_addr,
            spanlake::api::http::SQL_PATH
        ))
        .body(sql)
        .send()
        .await
        .unwrap();
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    let mut body = response.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = body.next().await {
        let mut buffer = arrow::buffer::Buffer::from(chunk.unwrap().to_vec());
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer).unwrap() {
                received += batch.num_rows();
            }
        }
    }
    report("HTTP Arrow IPC", received, started);
    server.shutdown().await;
}
