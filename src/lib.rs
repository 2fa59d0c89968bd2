//! spanlake: an analytical query service for OpenTelemetry traces on Apache DataFusion.
//!
//! The modules are layers; each imports only the layers below it (checked by
//! `tests/it/architecture.rs`):
//!
//! ```text
//! server                     wiring: one process, every listener (main.rs: the CLI)
//! tempo                      Tempo's API: HTTP + tempopb gRPC → typed requests → tempopb
//! api                        Flight SQL, SQL over HTTP, /metrics, request measuring, error → status
//! report                     anomaly reports: options, statistics, findings, JSON/Markdown/HTML
//! query                      every plan: search, trace by id, tags, SQL; one error type
//! traceql  tables  ingest    the TraceQL language | blocks ∪ live rows | OTLP receivers
//! ingester  cluster          WAL, live traces, block cutting and flush | members, ring, health
//! storage  live  generator   blocks and catalog | the live-rows contract | synthetic traces
//! schema  config             columns and OTLP ⇄ rows | configuration
//! ids  time  tenant  telemetry                    facts and counters every layer may use
//! ```
//!
//! A span's path: [`ingest`] decodes an OTLP export into [`schema`] rows and hands them to the
//! [`ingester`], which appends them to its WAL, fsyncs, makes them live and acknowledges; later
//! it cuts complete traces into Parquet blocks that [`storage`] commits to the catalog.
//!
//! A query's path: an edge ([`tempo`], [`api`], the CLI) reads its parameters into a typed
//! request and calls [`query`]; the query layer checks TraceQL with [`traceql`], lowers it to a
//! DataFusion plan over the tenant's [`tables`] — committed blocks first, then the live rows of
//! the ingester through the [`live`] contract, excluding those blocks — runs it, and returns
//! typed results or a [`query::QueryError`] whose kind each edge maps once to its status.
//! [`telemetry`] counts what happens on the way; any layer may use it.

/// mimalloc rather than the system allocator: ingest and queries allocate many small,
/// short-lived objects (decoded spans, Arrow buffers), which it serves without the page
/// faults and lock contention of glibc's allocator. Declared in the library so that the
/// binary, the tests and the benchmarks all run on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod cluster;
pub mod config;
pub mod generator;
pub mod ids;
pub mod ingest;
pub mod ingester;
pub mod live;
pub mod query;
pub mod report;
pub mod schema;
pub mod server;
pub mod storage;
pub mod tables;
pub mod telemetry;
pub mod tempo;
pub mod tenant;
pub mod time;
pub mod traceql;

/// Messages generated from `proto/spanlake.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("spanlake.v1");
}

/// Grafana Tempo's query messages and services, generated from `proto/tempo.proto`.
pub mod tempopb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("tempopb");
}
