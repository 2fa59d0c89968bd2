//! The `GET /metrics` route: the server's [`Telemetry`] in the text exposition format 0.0.4.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::{self, Telemetry};

/// Path of the metrics endpoint, on the HTTP port, outside any API prefix and tenant-free.
pub const METRICS_PATH: &str = "/metrics";

/// The `GET /metrics` route, rendering `telemetry` at every scrape.
pub fn router(telemetry: Telemetry) -> Router {
    Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(telemetry)
}

async fn scrape(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        telemetry.render(),
    )
}
