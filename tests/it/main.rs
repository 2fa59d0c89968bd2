//! spanlake's integration tests: one binary, one module per area.

mod common;
mod crash;
mod ingest_grpc;
mod ingest_http;
mod otel_sdk;
mod slt;
mod sql_guard;
mod trace_by_id;
mod visibility;
