//! `GET /api/v1/events`: server-sent events of the monitor's event stream.
//! The first event of each connection is a `hello` with every cluster's
//! latest verdict, so a page can draw itself without waiting.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::auth::Principal;
use crate::monitor::MonitorEvent;

/// The SSE handler.
pub async fn sse(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, super::ApiError> {
    // Held by the stream: released when the client goes away or at shutdown.
    let permit = state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            super::ApiError::overloaded(
                "too many open event streams (api.max_event_streams); retry shortly",
            )
        })?;
    let hello: Vec<_> = state
        .monitor
        .cluster_names()
        .iter()
        .filter(|n| caller.scope.allows(n))
        .filter_map(|n| state.monitor.cluster(n))
        .map(|c| {
            let s = c.health.borrow().clone();
            json!({ "cluster": c.name, "verdict": s.as_ref().map(|s| s.verdict), "leader": s.as_ref().and_then(|s| s.leader.clone()) })
        })
        .collect();
    let first = Event::default()
        .event("hello")
        .json_data(json!({ "clusters": hello }))
        .unwrap_or_default();
    let rx = state.monitor.subscribe();
    let scope = caller.scope;
    let events = stream::unfold((rx, scope), |(mut rx, scope)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) if !scope.allows(ev.cluster()) => continue,
                Ok(ev) => {
                    let name = match &ev {
                        MonitorEvent::Health { .. } => "health",
                        MonitorEvent::VerdictChanged { .. } => "verdict_changed",
                        MonitorEvent::LeaderChanged(_) => "leader_changed",
                        MonitorEvent::Metrics { .. } => "metrics",
                    };
                    let event = Event::default()
                        .event(name)
                        .json_data(&ev)
                        .unwrap_or_default();
                    return Some((Ok(event), (rx, scope)));
                }
                // A slow reader skips what it missed; the next event carries current state.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let all = stream::once(async move { Ok(first) });
    use futures_util::StreamExt;
    // Ends at shutdown, so an open page does not hold the server open.
    let shutdown = state.shutdown.clone();
    let events = events
        .take_until(async move { shutdown.cancelled_owned().await })
        .map(move |e| {
            let _held = &permit;
            e
        });
    Ok(Sse::new(all.chain(events)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
