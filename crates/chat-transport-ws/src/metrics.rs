//! `GET /metrics`: the engine's and the transport's counters in the
//! Prometheus text exposition format, version 0.0.4.
//!
//! | name | type | what |
//! |---|---|---|
//! | `chat_http_connections` | gauge | HTTP connections open now (WebSockets included) |
//! | `chat_ws_connections` | gauge | WebSocket connections open now |
//! | `chat_ws_sessions_asleep` | gauge | WebSocket sessions idle without a task now |
//! | `chat_ws_sockets_resting` | gauge | sockets of sleeping sessions waiting outside tokio's reactor now |
//! | `chat_http_requests_total` | counter | HTTP requests served |
//! | `chat_ws_upgrades_total` | counter | WebSocket upgrades accepted |
//! | `chat_ws_sockets_risen_total` | counter | resting sockets taken back into tokio's reactor for work (keep-alives are answered at rest) |
//! | `chat_tls_handshake_failures_total` | counter | failed or timed-out TLS handshakes |
//! | `chat_http_uploads_total` | counter | files stored through `POST /api/rooms/{room}/files` |
//! | `chat_http_uploads_failed_total` | counter | HTTP uploads refused or interrupted (nothing kept) |
//! | `chat_http_downloads_total` | counter | file downloads started through `GET /api/files/{id}` |
//! | `chat_sessions` | gauge | engine sessions connected now |
//! | `chat_authenticated_sessions` | gauge | sessions logged in now |
//! | `chat_subscriptions` | gauge | room subscriptions held now |
//! | `chat_frames_in_total` | counter | client frames handled |
//! | `chat_messages_in_total` | counter | messages stored (acknowledged) |
//! | `chat_sends_batched_total` | counter | sends stored with others in one store request (pipelined) |
//! | `chat_fanout_deliveries_total` | counter | frames queued to sessions by fan-out |
//! | `chat_lagged_total` | counter | subscribers dropped for a full queue |
//! | `chat_rate_limited_total` | counter | requests refused by the rate limiter |
//! | `chat_admission_rejected_total` | counter | connections refused by admission control |
//! | `chat_bad_frames_total` | counter | frames that failed to decode (binary ones included) |
//! | `chat_gap_filled_total` | counter | messages fetched from the store to fill fan-out gaps |
//! | `chat_store_errors_total` | counter | store failures |
//! | `chat_store_append_seconds` | histogram | store append latency, until durable |
//! | `chat_bot_requests_total` | counter | bot replies started |
//! | `chat_bot_failures_total` | counter | bot replies that failed (fallback sent) |
//! | `chat_bot_latency_seconds` | histogram | bot reply latency, request to final text |

use std::fmt::Write;

use chat_core::metrics::{Counter, Gauge, Histogram};
use chat_core::Metrics;

/// The transport's own counters.
#[derive(Debug, Default)]
pub(crate) struct TransportStats {
    pub(crate) http_connections: Gauge,
    pub(crate) ws_connections: Gauge,
    pub(crate) ws_asleep: Gauge,
    pub(crate) ws_resting: Gauge,
    pub(crate) http_requests: Counter,
    pub(crate) ws_upgrades: Counter,
    pub(crate) ws_risen: Counter,
    pub(crate) tls_failures: Counter,
    pub(crate) uploads: Counter,
    pub(crate) uploads_failed: Counter,
    pub(crate) downloads: Counter,
}

/// Decrements a gauge when dropped.
pub(crate) struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl TransportStats {
    /// Counts one more open HTTP connection, to be taken down by hand
    /// ([`TransportStats::connection_closed`]): for a connection handed
    /// from one task to another.
    pub(crate) fn connection_opened(&self) {
        self.http_connections.inc();
    }

    /// Takes down a count made by [`TransportStats::connection_opened`].
    pub(crate) fn connection_closed(&self) {
        self.http_connections.dec();
    }

    /// Counts an open HTTP connection while the guard lives.
    pub(crate) fn http_connection(&self) -> GaugeGuard<'_> {
        self.http_connections.inc();
        GaugeGuard(&self.http_connections)
    }

    /// Counts an open WebSocket, to be taken down by
    /// [`TransportStats::ws_closed`] (a session outlives any one task).
    pub(crate) fn ws_opened(&self) {
        self.ws_connections.inc();
        self.ws_upgrades.inc();
    }

    /// Takes down a count made by [`TransportStats::ws_opened`].
    pub(crate) fn ws_closed(&self) {
        self.ws_connections.dec();
    }
}

/// Renders every metric in Prometheus text format 0.0.4.
pub(crate) fn render(engine: &Metrics, transport: &TransportStats) -> String {
    let mut out = String::with_capacity(4096);
    let t = transport;
    gauge(
        &mut out,
        "chat_http_connections",
        "HTTP connections open now, WebSockets included.",
        &t.http_connections,
    );
    gauge(
        &mut out,
        "chat_ws_connections",
        "WebSocket connections open now.",
        &t.ws_connections,
    );
    gauge(
        &mut out,
        "chat_ws_sessions_asleep",
        "WebSocket sessions idle without a task now.",
        &t.ws_asleep,
    );
    gauge(
        &mut out,
        "chat_ws_sockets_resting",
        "Sockets of sleeping sessions waiting outside tokio's reactor now.",
        &t.ws_resting,
    );
    counter(
        &mut out,
        "chat_http_requests_total",
        "HTTP requests served.",
        &t.http_requests,
    );
    counter(
        &mut out,
        "chat_ws_upgrades_total",
        "WebSocket upgrades accepted.",
        &t.ws_upgrades,
    );
    counter(
        &mut out,
        "chat_ws_sockets_risen_total",
        "Resting sockets taken back into tokio's reactor for work.",
        &t.ws_risen,
    );
    counter(
        &mut out,
        "chat_tls_handshake_failures_total",
        "Failed or timed-out TLS handshakes.",
        &t.tls_failures,
    );
    counter(
        &mut out,
        "chat_http_uploads_total",
        "Files stored through the HTTP upload route.",
        &t.uploads,
    );
    counter(
        &mut out,
        "chat_http_uploads_failed_total",
        "HTTP uploads refused or interrupted; nothing was kept.",
        &t.uploads_failed,
    );
    counter(
        &mut out,
        "chat_http_downloads_total",
        "File downloads started through the HTTP route.",
        &t.downloads,
    );
    let m = engine;
    gauge(
        &mut out,
        "chat_sessions",
        "Engine sessions connected now.",
        &m.sessions,
    );
    gauge(
        &mut out,
        "chat_authenticated_sessions",
        "Sessions logged in now.",
        &m.authenticated,
    );
    gauge(
        &mut out,
        "chat_subscriptions",
        "Room subscriptions held now on this node.",
        &m.subscriptions,
    );
    counter(
        &mut out,
        "chat_frames_in_total",
        "Client frames handled.",
        &m.frames_in,
    );
    counter(
        &mut out,
        "chat_messages_in_total",
        "Messages stored (acknowledged).",
        &m.messages_in,
    );
    counter(
        &mut out,
        "chat_sends_batched_total",
        "Sends stored with others in one store request (a connection's pipelined sends).",
        &m.sends_batched,
    );
    counter(
        &mut out,
        "chat_fanout_deliveries_total",
        "Frames queued to sessions by fan-out, one per recipient.",
        &m.deliveries,
    );
    counter(
        &mut out,
        "chat_lagged_total",
        "Subscribers disconnected because their queue was full.",
        &m.lagged,
    );
    counter(
        &mut out,
        "chat_rate_limited_total",
        "Requests refused by the rate limiter.",
        &m.rate_limited,
    );
    counter(
        &mut out,
        "chat_admission_rejected_total",
        "Connections refused by admission control.",
        &m.admission_rejected,
    );
    counter(
        &mut out,
        "chat_bad_frames_total",
        "Client frames that failed to decode.",
        &m.bad_frames,
    );
    counter(
        &mut out,
        "chat_gap_filled_total",
        "Stored messages fetched to fill fan-out gaps.",
        &m.gap_filled,
    );
    counter(
        &mut out,
        "chat_store_errors_total",
        "Store failures.",
        &m.store_errors,
    );
    histogram(
        &mut out,
        "chat_store_append_seconds",
        "Store append latency until durable.",
        &m.store_append,
    );
    counter(
        &mut out,
        "chat_bot_requests_total",
        "Bot replies started.",
        &m.bot_requests,
    );
    counter(
        &mut out,
        "chat_bot_failures_total",
        "Bot replies that failed (a fallback was sent).",
        &m.bot_failures,
    );
    histogram(
        &mut out,
        "chat_bot_latency_seconds",
        "Bot reply latency, request to final text.",
        &m.bot_latency,
    );
    out
}

fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, g: &Gauge) {
    head(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {}", g.get());
}

fn counter(out: &mut String, name: &str, help: &str, c: &Counter) {
    head(out, name, help, "counter");
    let _ = writeln!(out, "{name} {}", c.get());
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    head(out, name, help, "histogram");
    let (buckets, count, sum) = h.snapshot();
    for (le, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.messages_in.add(3);
        m.store_append
            .observe(std::time::Duration::from_micros(700));
        let t = TransportStats::default();
        t.ws_opened();
        let text = render(&m, &t);
        assert!(text.contains("# TYPE chat_messages_in_total counter\nchat_messages_in_total 3\n"));
        assert!(text.contains("chat_ws_connections 1\n"));
        assert!(text.contains("chat_store_append_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("chat_store_append_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("chat_store_append_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("chat_store_append_seconds_count 1\n"));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
        }
    }
}
