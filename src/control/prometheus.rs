//! `GET /metrics`: every worker's counters (scraped over the bus) and the control
//! thread's own (health transitions, reloads), summed and written in the Prometheus
//! text exposition format 0.0.4.

use super::State;
use crate::health::machine::State as Health;
use crate::metrics::{HistogramSnap, Totals, WorkerStats, BUCKETS};
use std::fmt::Write;
use std::time::Instant;

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A counter or gauge family read off a group's totals: name, help, getter.
type GroupFamily = (
    &'static str,
    &'static str,
    fn(&crate::metrics::GroupTotals) -> u64,
);
/// A family read off each server's stats: name, type, help, getter.
type ServerFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::metrics::ServerStats) -> u64,
);

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a histogram's buckets (cumulative), sum and count under `labels`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnap) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count()
    );
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braced} {}", h.count());
}

/// The whole exposition for `stats` (one entry per worker that answered).
pub(super) fn render(s: &State, stats: &[WorkerStats], now: Instant) -> String {
    let mut t = Totals::default();
    for w in stats {
        t.add(&w.totals);
    }
    let mut out = String::with_capacity(8192);
    requests(&mut out, &t);
    upstreams(&mut out, &t);
    servers(&mut out, s, stats);
    cache(&mut out, s, stats);
    process(&mut out, s, stats, &t, now);
    out
}

fn cache(out: &mut String, s: &State, stats: &[WorkerStats]) {
    let mut c = crate::cache::Counters::default();
    for w in stats {
        c.add(&w.cache);
    }
    family(
        out,
        "ringway_cache_responses_total",
        "counter",
        "Responses of routes that cache, by what the cache did (their X-Cache).",
    );
    for (label, n) in crate::cache::STATUS_LABELS.iter().zip(c.responses) {
        let _ = writeln!(
            out,
            "ringway_cache_responses_total{{status=\"{label}\"}} {n}"
        );
    }
    let store = s.cache.stats();
    let rows: [(&str, &str, &str, u64); 9] = [
        (
            "ringway_cache_entries",
            "gauge",
            "Responses stored.",
            store.entries as u64,
        ),
        (
            "ringway_cache_bytes",
            "gauge",
            "Bytes stored (heads, bodies, keys and per-entry overhead), each entry once.",
            store.bytes as u64,
        ),
        (
            "ringway_cache_max_bytes",
            "gauge",
            "The bound on ringway_cache_bytes (cache.max_bytes).",
            store.capacity as u64,
        ),
        (
            "ringway_cache_stored_total",
            "counter",
            "Responses stored (or refreshed by a 304).",
            c.stored,
        ),
        (
            "ringway_cache_evictions_total",
            "counter",
            "Entries evicted to stay under cache.max_bytes.",
            store.evictions,
        ),
        (
            "ringway_cache_expired_total",
            "counter",
            "Entries dropped once stale past any use and without a validator.",
            store.expired,
        ),
        (
            "ringway_cache_purged_total",
            "counter",
            "Entries removed by purges and by unsafe requests to their URL.",
            store.purged,
        ),
        (
            "ringway_cache_coalesced_waits_total",
            "counter",
            "Requests that waited for another request's fetch of their key.",
            c.coalesced,
        ),
        (
            "ringway_cache_background_refreshes_total",
            "counter",
            "Stale entries refreshed in the background (stale-while-revalidate).",
            c.refreshes,
        ),
    ];
    for (name, kind, help, v) in rows {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

fn requests(out: &mut String, t: &Totals) {
    family(
        out,
        "ringway_requests_total",
        "counter",
        "Requests answered, by route (its name, or routes[i]; none: no route matched), method and status class.",
    );
    for ((route, method, code), n) in &t.requests {
        let _ = writeln!(
            out,
            "ringway_requests_total{{route=\"{}\",method=\"{method}\",code=\"{code}\"}} {n}",
            esc(route)
        );
    }
    family(
        out,
        "ringway_request_duration_seconds",
        "histogram",
        "Whole requests, from the request head read to the response written.",
    );
    histogram(
        out,
        "ringway_request_duration_seconds",
        "",
        &t.request_duration,
    );
}

fn upstreams(out: &mut String, t: &Totals) {
    family(
        out,
        "ringway_upstream_response_seconds",
        "histogram",
        "Time from sending a request to an upstream group to its response head (retries included).",
    );
    for (name, g) in &t.groups {
        let labels = format!("upstream=\"{}\"", esc(name));
        histogram(
            out,
            "ringway_upstream_response_seconds",
            &labels,
            &g.response,
        );
    }
    let counters: [GroupFamily; 3] = [
        (
            "ringway_upstream_connect_errors_total",
            "Connects to the group's servers that failed or timed out.",
            |g| g.connect_errors,
        ),
        (
            "ringway_upstream_retries_total",
            "Attempts sent again: to another server, or fresh after a dead pooled connection.",
            |g| g.retries,
        ),
        (
            "ringway_upstream_retry_budget_refusals_total",
            "Retries the group's retry budget refused.",
            |g| g.budget_refusals,
        ),
    ];
    for (name, help, get) in counters {
        family(out, name, "counter", help);
        for (group, g) in &t.groups {
            let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", esc(group), get(g));
        }
    }
    family(
        out,
        "ringway_upstream_connections_total",
        "counter",
        "Requests sent on a pooled keep-alive connection (reused) or a new one (new).",
    );
    for (group, g) in &t.groups {
        let g_ = esc(group);
        let _ = writeln!(
            out,
            "ringway_upstream_connections_total{{upstream=\"{g_}\",kind=\"reused\"}} {}",
            g.reused
        );
        let _ = writeln!(
            out,
            "ringway_upstream_connections_total{{upstream=\"{g_}\",kind=\"new\"}} {}",
            g.connects
        );
    }
}

fn servers(out: &mut String, s: &State, stats: &[WorkerStats]) {
    let table = s.health.borrow();
    let mut rows = Vec::new();
    for group in &s.snapshot.groups {
        for (m, srv) in group.members.iter().zip(&group.upstream.servers) {
            let labels = format!(
                "upstream=\"{}\",server=\"{}\"",
                esc(&group.upstream.name),
                srv.addr
            );
            let up = matches!(
                table.status(m.id),
                Some((Health::Up | Health::Probation, _))
            );
            rows.push((labels, m.id, up));
        }
    }
    family(
        out,
        "ringway_upstream_server_up",
        "gauge",
        "1 when the server may be picked (up, or on probation), 0 when it is down.",
    );
    for (labels, _, up) in &rows {
        let _ = writeln!(
            out,
            "ringway_upstream_server_up{{{labels}}} {}",
            u8::from(*up)
        );
    }
    let per_server: [ServerFamily; 5] = [
        (
            "ringway_upstream_server_requests_total",
            "counter",
            "Attempts sent to the server.",
            |x| x.requests,
        ),
        (
            "ringway_upstream_server_errors_total",
            "counter",
            "Failures passive health counted against the server.",
            |x| x.failures,
        ),
        (
            "ringway_upstream_server_in_flight",
            "gauge",
            "Requests in flight to the server.",
            |x| u64::from(x.in_flight),
        ),
        (
            "ringway_upstream_server_tunnels",
            "gauge",
            "Upgrade (WebSocket) tunnels open to the server.",
            |x| u64::from(x.tunnels),
        ),
        (
            "ringway_upstream_server_pooled",
            "gauge",
            "Idle keep-alive connections to the server.",
            |x| u64::from(x.pooled),
        ),
    ];
    for (name, kind, help, get) in per_server {
        family(out, name, kind, help);
        for (labels, id, _) in &rows {
            let _ = writeln!(
                out,
                "{name}{{{labels}}} {}",
                WorkerStats::sum(stats, *id, get)
            );
        }
    }
    family(
        out,
        "ringway_health_transitions_total",
        "counter",
        "Server state changes logged, by the state entered.",
    );
    for ((name, to), n) in table.transitions() {
        // Names read "upstream `web` server ADDR"; the labels split them back.
        let (group, addr) = name
            .strip_prefix("upstream `")
            .and_then(|r| r.split_once("` server "))
            .unwrap_or(("?", name.as_str()));
        let _ = writeln!(
            out,
            "ringway_health_transitions_total{{upstream=\"{}\",server=\"{}\",to=\"{to}\"}} {n}",
            esc(group),
            esc(addr)
        );
    }
}

fn process(out: &mut String, s: &State, stats: &[WorkerStats], t: &Totals, now: Instant) {
    family(
        out,
        "ringway_open_connections",
        "gauge",
        "Client connections open, per worker.",
    );
    for w in stats {
        let _ = writeln!(
            out,
            "ringway_open_connections{{worker=\"{}\"}} {}",
            w.worker, w.open_conns
        );
    }
    let c = crate::metrics::ConnCounts::sum(stats);
    family(
        out,
        "ringway_tls_handshakes_total",
        "counter",
        "TLS handshakes with clients, by result (failed: the client was closed).",
    );
    let _ = writeln!(
        out,
        "ringway_tls_handshakes_total{{result=\"ok\"}} {}",
        c.tls_ok
    );
    let _ = writeln!(
        out,
        "ringway_tls_handshakes_total{{result=\"failed\"}} {}",
        c.tls_failed
    );
    family(
        out,
        "ringway_tunnels_open",
        "gauge",
        "Upgrade (WebSocket) tunnels open now.",
    );
    let _ = writeln!(out, "ringway_tunnels_open {}", c.tunnels_open);
    family(
        out,
        "ringway_tunnels_total",
        "counter",
        "Upgrade (WebSocket) tunnels opened.",
    );
    let _ = writeln!(out, "ringway_tunnels_total {}", c.tunnels_total);
    family(
        out,
        "ringway_refused_requests_total",
        "counter",
        "Requests refused before routing or forwarding, by reason (rate_limit: 429, access: 403).",
    );
    let _ = writeln!(
        out,
        "ringway_refused_requests_total{{reason=\"rate_limit\"}} {}",
        c.rate_limited
    );
    let _ = writeln!(
        out,
        "ringway_refused_requests_total{{reason=\"access\"}} {}",
        c.forbidden
    );
    family(
        out,
        "ringway_proxy_protocol_refused_total",
        "counter",
        "Connections closed on a proxy_protocol listener: untrusted peer or no valid PROXY header.",
    );
    let _ = writeln!(
        out,
        "ringway_proxy_protocol_refused_total {}",
        c.proxy_refused
    );
    family(
        out,
        "ringway_client_bytes_total",
        "counter",
        "Bytes read from clients (in) and written to them (out).",
    );
    let _ = writeln!(
        out,
        "ringway_client_bytes_total{{direction=\"in\"}} {}",
        t.bytes_in
    );
    let _ = writeln!(
        out,
        "ringway_client_bytes_total{{direction=\"out\"}} {}",
        t.bytes_out
    );
    family(
        out,
        "ringway_access_log_dropped_lines_total",
        "counter",
        "Access log lines dropped: the log could not be written, or its writer fell behind.",
    );
    let _ = writeln!(
        out,
        "ringway_access_log_dropped_lines_total {}",
        s.access.dropped()
    );
    family(
        out,
        "ringway_reloads_total",
        "counter",
        "Reloads and registry changes, applied (ok) or refused (error).",
    );
    let _ = writeln!(
        out,
        "ringway_reloads_total{{result=\"ok\"}} {}",
        s.reloads.0
    );
    let _ = writeln!(
        out,
        "ringway_reloads_total{{result=\"error\"}} {}",
        s.reloads.1
    );
    family(
        out,
        "ringway_last_reload_success",
        "gauge",
        "1 when the last reload was applied (also before any), 0 when it was refused.",
    );
    let ok = s.last_reload.as_ref().is_none_or(|r| r.result.is_ok());
    let _ = writeln!(out, "ringway_last_reload_success {}", u8::from(ok));
    family(
        out,
        "ringway_config_generation",
        "gauge",
        "The config generation in force.",
    );
    let _ = writeln!(out, "ringway_config_generation {}", s.snapshot.generation);
    family(
        out,
        "ringway_uptime_seconds",
        "gauge",
        "Seconds since the process started serving.",
    );
    let _ = writeln!(
        out,
        "ringway_uptime_seconds {:.3}",
        (now - s.started).as_secs_f64()
    );
    family(
        out,
        "ringway_workers_scraped",
        "gauge",
        "Workers that answered this scrape (fewer than configured: one is gone or stuck).",
    );
    let _ = writeln!(out, "ringway_workers_scraped {}", stats.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = HistogramSnap::default();
        h.counts[0] = 2;
        h.counts[3] = 1;
        h.counts[BUCKETS.len()] = 1;
        h.sum = 7.5;
        let mut out = String::new();
        histogram(&mut out, "x", "upstream=\"web\"", &h);
        assert!(
            out.contains("x_bucket{upstream=\"web\",le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{upstream=\"web\",le=\"0.005\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{upstream=\"web\",le=\"5\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{upstream=\"web\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("x_sum{upstream=\"web\"} 7.5\n"), "{out}");
        assert!(out.contains("x_count{upstream=\"web\"} 4\n"), "{out}");
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
