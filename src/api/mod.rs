//! Query-side network interfaces.

pub mod http;
