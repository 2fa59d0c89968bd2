//! Grafana Tempo's query API: the HTTP endpoints on the HTTP port and the tempopb gRPC
//! services, answering exactly as Tempo's query frontend does so that Grafana, tempo-cli and
//! tempo-vulture work unchanged.

pub mod json;
pub mod tags;
