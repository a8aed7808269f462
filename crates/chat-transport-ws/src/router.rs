//! Routes one HTTP request: the web client's files, `/ws`, `/health`,
//! `/metrics` and the REST API under `/api/`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::http::{self, Body};
use crate::server::Shared;
use crate::ws::PendingWs;

/// Answers one request. `slot` receives the pending WebSocket when the
/// request is an accepted upgrade.
pub(crate) async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    slot: Arc<Mutex<Option<PendingWs>>>,
    peer: SocketAddr,
) -> Response<Body> {
    shared.stats.http_requests.inc();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let res = match path.as_str() {
        "/ws" => match method {
            Method::GET => crate::ws::upgrade(&shared, req, &slot, peer).await,
            _ => http::wrong_method("GET"),
        },
        "/health" => match method {
            Method::GET => health(&shared).await,
            _ => http::wrong_method("GET"),
        },
        "/metrics" => match method {
            Method::GET => http::with_body(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(shared.engine.metrics(), &shared.stats),
            ),
            _ => http::wrong_method("GET"),
        },
        p if p.starts_with("/api/") => crate::rest::handle(&shared, req).await,
        p if shared.settings.web_client => match (method.clone(), crate::web::file(p)) {
            (Method::GET, Some(res)) => res,
            (_, Some(_)) => http::wrong_method("GET"),
            (_, None) => http::no_route(),
        },
        _ => http::no_route(),
    };
    if res.status().is_client_error() || res.status().is_server_error() {
        tracing::info!(%peer, %method, path = %sanitize(&path), status = res.status().as_u16(), "request refused");
    }
    res
}

/// A path cut to a sane length for logs.
fn sanitize(path: &str) -> &str {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// `GET /health`: 200 when the store answers its ping in time, else 503.
async fn health(shared: &Shared) -> Response<Body> {
    if shared.engine.is_shutting_down() {
        return http::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "shutting_down", "store": "unknown" }),
        );
    }
    let ping =
        tokio::time::timeout(shared.settings.health_timeout, shared.engine.store().ping()).await;
    let (status, store) = match ping {
        Ok(Ok(())) => (StatusCode::OK, "ok".to_owned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: store ping failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("error: {e}"))
        }
        Err(_) => {
            tracing::warn!("health: store ping timed out");
            (StatusCode::SERVICE_UNAVAILABLE, "timeout".to_owned())
        }
    };
    let overall = if status == StatusCode::OK {
        "ok"
    } else {
        "unavailable"
    };
    http::json(
        status,
        &serde_json::json!({ "status": overall, "store": store }),
    )
}
