//! Network interfaces that are not Tempo's: Arrow Flight SQL, SQL over HTTP, the metrics
//! endpoint, the layer that measures every request, and the one mapping of query errors to HTTP
//! and gRPC statuses that every interface uses.

pub mod cluster;
pub mod flight;
pub mod http;
pub mod measure;
pub mod metrics;
pub mod partial;
pub mod status;
