//! spanlake: an analytical query service for OpenTelemetry traces on Apache DataFusion.
//!
//! Spans arrive over OTLP ([`ingest`]), are made durable and held live by the [`ingester`],
//! flushed as Parquet blocks to [`storage`], and read as DataFusion [`tables`] through the
//! [`query`] engine. [`server`] wires the pieces into one process; any of them may count into
//! its [`telemetry`].

pub mod api;
pub mod config;
pub mod generator;
pub mod ids;
pub mod ingest;
pub mod ingester;
pub mod live;
pub mod query;
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
