//! Query-side network interfaces that are not Tempo's: SQL over HTTP, the metrics endpoint,
//! and the one mapping of query errors to HTTP and gRPC statuses that every interface uses.

pub mod http;
pub mod metrics;
pub mod status;
