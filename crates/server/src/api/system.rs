//! The daemon itself: liveness, Prometheus metrics, the registered drivers, and the status
//! changes of everything as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use stockade_api::{DriverInfo, StatusChange};
use stockade_core::Driver;
use tokio::sync::broadcast;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Json;
use crate::error::ApiResult;
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(drivers))
        .routes(routes!(events))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Liveness: the daemon answers.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = Scrape.run(&state).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// The registered drivers, their availability and how many sandboxes each holds.
#[utoipa::path(get, path = "/api/drivers", tag = "system", responses((status = 200, body = Vec<DriverInfo>)))]
pub async fn drivers(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<DriverInfo>>> {
    Ok(Json(ListDrivers.run(&state).await))
}

/// Status changes of sandboxes and execs, as server-sent events (`event: sandbox|exec`).
#[utoipa::path(get, path = "/api/events", tag = "system", responses((status = 200, description = "text/event-stream of StatusChange")))]
pub async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = Subscribe.run(&state);
    let stream = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(change) => {
                    let event = Event::default()
                        .event(change.kind.as_str())
                        .json_data(&change)
                        .unwrap_or_default();
                    return Some((Ok(event), rx));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------------------------------------
// Actions

/// `GET /metrics`: the counters, then sandboxes by driver and status and the execs followed now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scrape;

impl Scrape {
    /// The Prometheus text; a driver that cannot list counts no sandboxes.
    pub async fn run(self, state: &AppState) -> String {
        let sandboxes = state.driver.list().await.unwrap_or_default();
        state.metrics.render(&sandboxes, state.execs.running()).await
    }
}

/// `GET /api/drivers`: every registered driver, in registration order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListDrivers;

impl ListDrivers {
    /// A driver that cannot be built or probed is listed as unavailable, with the reason.
    pub async fn run(self, state: &AppState) -> Vec<DriverInfo> {
        let sandboxes = state.driver.list().await.unwrap_or_default();
        let registry = state.driver.registry();
        let mut out = Vec::new();
        for name in registry.names() {
            let description = registry
                .factory(name)
                .map(|f| f.description())
                .unwrap_or_default();
            let probed = stockade_core::registry::availability(registry, name).await;
            let circuits = registry
                .driver(name)
                .ok()
                .and_then(|d| d.admin().map(|a| a.circuits()))
                .unwrap_or_default();
            out.push(DriverInfo {
                name: name.to_owned(),
                description: description.to_owned(),
                available: probed.is_ok(),
                summary: probed
                    .as_ref()
                    .ok()
                    .map(|(_, f)| f.summary.clone())
                    .filter(|s| !s.is_empty()),
                reason: probed.err().map(|e| e.to_string()),
                sandboxes: sandboxes.iter().filter(|s| s.driver == name).count(),
                circuits,
            });
        }
        out
    }
}

/// `GET /api/events`: every status change from now on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subscribe;

impl Subscribe {
    pub fn run(self, state: &AppState) -> broadcast::Receiver<StatusChange> {
        state.events.subscribe()
    }
}
