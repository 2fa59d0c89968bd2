//! spanlake's integration tests: one binary, one module per area.

mod architecture;
mod common;
mod crash;
mod dedicated_columns;
mod flight_clients;
mod flight_sql;
mod ingest_grpc;
mod ingest_http;
mod lifecycle;
mod limits;
mod logs_metrics;
mod metrics_endpoint;
mod object_store;
mod otel_sdk;
mod restart;
mod slt;
mod sql_guard;
mod sql_http;
mod tempo_api;
mod tempo_tags;
mod tenancy;
mod trace_by_id;
mod traceql_conformance;
mod traceql_metrics;
mod traceql_semantics;
mod visibility;
