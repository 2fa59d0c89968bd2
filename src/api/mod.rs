//! Query-side network interfaces, the metrics endpoint beside them, and the layer that
//! measures every request.

pub mod http;
pub mod measure;
pub mod metrics;
