//! Query-side network interfaces, and the metrics endpoint beside them.

pub mod http;
pub mod metrics;
