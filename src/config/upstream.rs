//! `[upstreams.NAME]`: server groups, balancing, passive health, retries and active
//! health checks, validated into typed values.

#[cfg(test)]
use super::raw::StatusItem;
use super::raw::{RawHealth, RawServerEntry, RawUpstream, RawUpstreamTls, StatusSpec};
use super::{resolve, ConfigError, Validator};
use crate::tls::UpstreamTls;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

/// Default back-off steps in seconds: a flapping server rests longer each time.
const DEFAULT_BACKOFF: [u64; 3] = [1, 5, 30];
/// Methods that are safe to send twice (RFC 9110 section 9.2.2).
const DEFAULT_IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

/// Balancing policies (`balance = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each worker walks the server list in turn, starting at its own offset.
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm): no bursts to the heavy server.
    WeightedRoundRobin,
    /// Weighted random.
    Random,
    /// Power of two random choices, the one with fewer in-flight requests wins.
    P2c,
    /// Fewest in-flight requests (per worker), relative to weight.
    LeastConn,
    /// Lowest decaying average of response-header latency, times in-flight requests.
    LeastTime,
    /// Hash of the client address: a client sticks to a server while it is up.
    IpHash,
    /// Ketama ring over `hash_key`: removing one of N servers remaps about 1/N of keys.
    ConsistentHash,
}

impl Balance {
    /// Every policy with its config name.
    pub const ALL: [(&'static str, Balance); 8] = [
        ("round_robin", Balance::RoundRobin),
        ("weighted_round_robin", Balance::WeightedRoundRobin),
        ("random", Balance::Random),
        ("p2c", Balance::P2c),
        ("least_conn", Balance::LeastConn),
        ("least_time", Balance::LeastTime),
        ("ip_hash", Balance::IpHash),
        ("consistent_hash", Balance::ConsistentHash),
    ];
}

/// What `consistent_hash` hashes (`hash_key = "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$header_NAME`: a request header (underscores in NAME stand for dashes).
    Header(String),
    /// `$cookie_NAME`: one cookie from the Cookie header.
    Cookie(String),
    /// `$uri`: the request path, without the query.
    Uri,
}

impl HashKey {
    /// Parses a `hash_key` value.
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let bad = || {
            format!(
                "unknown variable `{text}` (use $remote_addr, $uri, $header_NAME or $cookie_NAME)"
            )
        };
        match text {
            "$remote_addr" => Ok(HashKey::RemoteAddr),
            "$uri" => Ok(HashKey::Uri),
            _ => {
                if let Some(name) = text.strip_prefix("$header_").filter(|n| !n.is_empty()) {
                    if !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(bad());
                    }
                    Ok(HashKey::Header(name.replace('_', "-").to_ascii_lowercase()))
                } else if let Some(name) = text.strip_prefix("$cookie_").filter(|n| !n.is_empty()) {
                    Ok(HashKey::Cookie(name.to_string()))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// One upstream group, `[upstreams.NAME]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The group's name as written in the config.
    pub name: String,
    /// The group's servers in file order; never empty, never all `backup`.
    pub servers: Vec<Server>,
    /// How a server is picked.
    pub balance: Balance,
    /// What `consistent_hash` hashes (`None` for the other policies).
    pub hash_key: Option<HashKey>,
    /// Time allowed to establish a TCP connection to a server.
    pub connect_timeout: Duration,
    /// Time allowed between sending the request and receiving the response head.
    pub response_header_timeout: Duration,
    /// Longest gap allowed between two reads of a response body.
    pub read_timeout: Duration,
    /// Most idle keep-alive connections kept per server per worker.
    pub keepalive: usize,
    /// How long an idle upstream connection is kept.
    pub keepalive_timeout: Duration,
    /// Failures within `fail_window` that mark a server down (on every worker).
    pub max_fails: u32,
    /// The window `max_fails` is counted in.
    pub fail_window: Duration,
    /// How long a marked-down server rests, by consecutive mark-down (the last repeats).
    pub backoff: Vec<Duration>,
    /// Response statuses that count as a passive failure (none by default).
    pub fail_on_status: Vec<u16>,
    /// Extra attempts on other servers after a failure (connect failures always fail over).
    pub retries: u32,
    /// Which failures are retried (for idempotent, replayable requests).
    pub retry_on: RetryOn,
    /// Request bodies up to this size are buffered whole so a retry can resend them.
    pub retry_body_max: usize,
    /// Methods safe to retry after the upstream may have processed the request.
    pub idempotent_methods: Vec<String>,
    /// Retries allowed per worker, as a fraction of its requests to this group.
    pub retry_budget: f64,
    /// Deadline for the whole exchange, response body included; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// A server coming back up ramps its weight from 0 to full over this time.
    pub slow_start: Option<Duration>,
    /// Active health checks, when configured.
    pub health: Option<HealthCheck>,
    /// Connections to the servers speak TLS (`tls`), with these settings.
    pub tls: Option<crate::tls::UpstreamTls>,
}

/// Failures `retry_on` may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// The upstream refused or never answered the connect (always retried anyway).
    pub connect: bool,
    /// No response head within `response_header_timeout`.
    pub timeout: bool,
    /// The connection closed or reset before a response head.
    pub reset: bool,
    /// These statuses (`"502"`, `"503"`, `"504"`) are retried instead of relayed.
    pub status_502: bool,
    /// See `status_502`.
    pub status_503: bool,
    /// See `status_502`.
    pub status_504: bool,
}

impl RetryOn {
    /// True when a response with this status is retried.
    pub fn status(&self, status: u16) -> bool {
        match status {
            502 => self.status_502,
            503 => self.status_503,
            504 => self.status_504,
            _ => false,
        }
    }
}

/// `[upstreams.NAME.health]`: periodic HTTP checks run once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested with GET.
    pub path: String,
    /// Host header; the server's address when unset.
    pub host: Option<String>,
    /// Time between checks of one server.
    pub interval: Duration,
    /// Time allowed for a check's whole response.
    pub timeout: Duration,
    /// Consecutive passes that mark a server up.
    pub rise: u32,
    /// Consecutive failures that mark a server down.
    pub fall: u32,
    /// Statuses that pass, as inclusive ranges.
    pub expect: Vec<(u16, u16)>,
    /// Servers start down and need `rise` passes first.
    pub start_down: bool,
}

impl HealthCheck {
    /// True when `status` passes the check.
    pub fn passes(&self, status: u16) -> bool {
        self.expect
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight (used by weighted policies).
    pub weight: u32,
    /// Most concurrent requests to this server across the process (split per worker).
    pub max_connections: Option<u32>,
    /// Used only when no primary server of the group can take the request.
    pub backup: bool,
}

impl Upstream {
    /// A group named `name` of one server, every other setting at its default: what
    /// `[upstreams.NAME] servers = ["ADDR"]` gives. For groups the admin API creates.
    pub fn with_defaults(name: &str, server: Server) -> Upstream {
        let raw: RawUpstream = toml::from_str("servers = [\"127.0.0.1:1\"]")
            // A fixed, valid table: the test below parses the same text.
            .expect("a one-server upstream table parses");
        let v = Validator {
            text: "",
            origin: "admin API",
        };
        let mut up = v
            .upstream(name.to_string(), raw)
            // Every default is valid: `a_default_group_has_every_default` checks it.
            .expect("defaults validate");
        up.servers = vec![server];
        up
    }
}

impl Validator<'_> {
    /// Validates one `[upstreams.NAME]` table.
    pub(super) fn upstream(&self, name: String, up: RawUpstream) -> Result<Upstream, ConfigError> {
        let key = |k: &str| format!("upstreams.{name}.{k}");
        let name_of = up.balance.get_ref().as_str();
        let Some(&(_, balance)) = Balance::ALL.iter().find(|(n, _)| *n == name_of) else {
            let known: Vec<&str> = Balance::ALL.iter().map(|(n, _)| *n).collect();
            return self.err(
                up.balance.span(),
                key("balance"),
                format!("unknown policy `{name_of}` (known: {})", known.join(", ")),
            );
        };
        let hash_key = match (&up.hash_key, balance) {
            (Some(k), Balance::ConsistentHash) => match HashKey::parse(k.get_ref()) {
                Ok(h) => Some(h),
                Err(m) => return self.err(k.span(), key("hash_key"), m),
            },
            (None, Balance::ConsistentHash) => Some(HashKey::RemoteAddr),
            (Some(k), _) => {
                return self.err(
                    k.span(),
                    key("hash_key"),
                    "is only used with balance = \"consistent_hash\"".into(),
                )
            }
            (None, _) => None,
        };
        let list_span = up.servers.span();
        let list = up.servers.into_inner();
        if list.is_empty() {
            return self.err(
                list_span,
                key("servers"),
                "needs at least one server".into(),
            );
        }
        let mut servers: Vec<Server> = Vec::new();
        for entry in list {
            let span = entry.span();
            let (addr, weight, max_connections, backup) = match entry.into_inner() {
                RawServerEntry::Addr(a) => (a, 1, None, false),
                RawServerEntry::Table(t) => (t.addr, t.weight, t.max_connections, t.backup),
            };
            let addr = match resolve(&addr) {
                Ok(a) if a.port() != 0 => a,
                Ok(_) => return self.err(span, key("servers"), format!("`{addr}` needs a port")),
                Err(m) => return self.err(span, key("servers"), m),
            };
            if !(1..=1000).contains(&weight) {
                return self.err(
                    span,
                    key("servers"),
                    format!("weight must be between 1 and 1000, got {weight}"),
                );
            }
            let max_connections = match max_connections {
                None => None,
                Some(m) if (1..=1_000_000).contains(&m) => Some(m as u32),
                Some(m) => {
                    return self.err(
                        span,
                        key("servers"),
                        format!("max_connections must be between 1 and 1000000, got {m}"),
                    )
                }
            };
            if servers.iter().any(|s| s.addr == addr) {
                return self.err(span, key("servers"), format!("`{addr}` is listed twice"));
            }
            servers.push(Server {
                addr,
                weight: weight as u32,
                max_connections,
                backup,
            });
        }
        if servers.iter().all(|s| s.backup) {
            return self.err(
                list_span,
                key("servers"),
                "needs at least one server that is not `backup`".into(),
            );
        }
        let backoff = match (&up.fail_timeout, &up.backoff) {
            (Some(_), Some(b)) => {
                return self.err(
                    b.span(),
                    key("backoff"),
                    "use either fail_timeout (a fixed rest) or backoff (steps)".into(),
                )
            }
            (Some(t), None) => vec![t.0],
            (None, Some(b)) if b.get_ref().is_empty() => {
                return self.err(b.span(), key("backoff"), "needs at least one step".into())
            }
            (None, Some(b)) => b.get_ref().iter().map(|d| d.0).collect(),
            (None, None) => DEFAULT_BACKOFF
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
        };
        let fail_on_status = match &up.fail_on_status {
            None => Vec::new(),
            Some(list) => {
                let mut out = Vec::new();
                for &st in list.get_ref() {
                    if !(100..=599).contains(&st) {
                        return self.err(
                            list.span(),
                            key("fail_on_status"),
                            format!("`{st}` is not an HTTP status"),
                        );
                    }
                    out.push(st as u16);
                }
                out
            }
        };
        let retry_on = match &up.retry_on {
            None => RetryOn {
                connect: true,
                timeout: true,
                reset: true,
                ..RetryOn::default()
            },
            Some(list) => {
                let mut r = RetryOn::default();
                for item in list.get_ref() {
                    match item.as_str() {
                        "connect" => r.connect = true,
                        "timeout" => r.timeout = true,
                        "reset" => r.reset = true,
                        "502" => r.status_502 = true,
                        "503" => r.status_503 = true,
                        "504" => r.status_504 = true,
                        other => {
                            return self.err(
                                list.span(),
                                key("retry_on"),
                                format!("unknown condition `{other}` (known: connect, timeout, reset, 502, 503, 504)"),
                            )
                        }
                    }
                }
                r
            }
        };
        let idempotent_methods = match &up.idempotent_methods {
            None => DEFAULT_IDEMPOTENT.iter().map(|m| m.to_string()).collect(),
            Some(list) => {
                for m in list.get_ref() {
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                        return self.err(
                            list.span(),
                            key("idempotent_methods"),
                            format!("`{m}` is not a method (use upper case, e.g. \"PUT\")"),
                        );
                    }
                }
                list.get_ref().clone()
            }
        };
        let retry_budget = match &up.retry_budget {
            None => 0.2,
            Some(b) if (0.0..=1.0).contains(b.get_ref()) => *b.get_ref(),
            Some(b) => {
                return self.err(
                    b.span(),
                    key("retry_budget"),
                    format!(
                        "must be a fraction between 0.0 and 1.0, got {}",
                        b.get_ref()
                    ),
                )
            }
        };
        let retry_body_max = up.retry_body_max.get_ref().0;
        if retry_body_max > 16 << 20 {
            return self.err(
                up.retry_body_max.span(),
                key("retry_body_max"),
                "must be at most 16MiB (bodies are buffered in memory to be resent)".into(),
            );
        }
        let health = match up.health {
            None => None,
            Some(h) => Some(self.health_check(h, &key("health"))?),
        };
        for (k, d) in [
            ("connect_timeout", up.connect_timeout.0),
            ("response_header_timeout", up.response_header_timeout.0),
            ("read_timeout", up.read_timeout.0),
            ("fail_window", up.fail_window.0),
        ]
        .into_iter()
        .chain(
            up.request_timeout
                .as_ref()
                .map(|d| ("request_timeout", d.0)),
        ) {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    origin: self.origin.to_string(),
                    line: self.line_of_key(&format!("upstreams.{name}"), k),
                    key: key(k),
                    message: "must be more than 0s".into(),
                });
            }
        }
        let tls = match up.tls {
            None => None,
            Some(t) => {
                let span = t.span();
                let loaded = match t.into_inner() {
                    RawUpstreamTls::On(false) => None,
                    RawUpstreamTls::On(true) => Some(UpstreamTls::load(None, None, true)),
                    RawUpstreamTls::Table(t) => Some(UpstreamTls::load(
                        t.sni.as_deref(),
                        t.ca.as_deref().map(|p| self.path(p)),
                        t.verify,
                    )),
                };
                match loaded.transpose() {
                    Ok(tls) => tls,
                    Err(e) => return self.err(span, key("tls"), e.to_string()),
                }
            }
        };
        Ok(Upstream {
            tls,
            balance,
            hash_key,
            servers,
            connect_timeout: up.connect_timeout.0,
            response_header_timeout: up.response_header_timeout.0,
            read_timeout: up.read_timeout.0,
            keepalive: self.positive(&up.keepalive, &key("keepalive"), 100_000)?,
            keepalive_timeout: up.keepalive_timeout.0,
            max_fails: self.positive(&up.max_fails, &key("max_fails"), 1000)? as u32,
            fail_window: up.fail_window.0,
            backoff,
            fail_on_status,
            retries: self.count(&up.retries, &key("retries"), 100)? as u32,
            retry_on,
            retry_body_max: retry_body_max as usize,
            idempotent_methods,
            retry_budget,
            request_timeout: up.request_timeout.map(|d| d.0),
            slow_start: up.slow_start.map(|d| d.0),
            health,
            name,
        })
    }

    fn health_check(&self, h: Spanned<RawHealth>, key: &str) -> Result<HealthCheck, ConfigError> {
        let span = h.span();
        let h = h.into_inner();
        let k = |sub: &str| format!("{key}.{sub}");
        if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return self.err(
                span.clone(),
                k("path"),
                format!("`{}` must be a path starting with `/`", h.path),
            );
        }
        if let Some(host) = &h.host {
            if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return self.err(span.clone(), k("host"), format!("`{host}` is not a host"));
            }
        }
        let expect = match &h.expect_status {
            None => vec![(200, 399)],
            Some(spec) => match parse_statuses(spec.get_ref()) {
                Ok(v) => v,
                Err(m) => return self.err(spec.span(), k("expect_status"), m),
            },
        };
        let start_down = match h.start.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("up") => false,
            Some("down") => true,
            Some(other) => {
                let s = h.start.as_ref().map(|s| s.span()).unwrap_or(span.clone());
                return self.err(s, k("start"), format!("`{other}` is not `up` or `down`"));
            }
        };
        if h.interval.0 < Duration::from_millis(10) {
            return self.err(span, k("interval"), "must be at least 10ms".into());
        }
        if h.timeout.0.is_zero() {
            return self.err(span, k("timeout"), "must be more than 0s".into());
        }
        Ok(HealthCheck {
            path: h.path,
            host: h.host,
            interval: h.interval.0,
            timeout: h.timeout.0,
            rise: self.positive(&h.rise, &k("rise"), 1000)? as u32,
            fall: self.positive(&h.fall, &k("fall"), 1000)? as u32,
            expect,
            start_down,
        })
    }
}

/// `"200-399"`, `"200"`, `[200, "300-302"]` into inclusive ranges.
fn parse_statuses(spec: &StatusSpec) -> Result<Vec<(u16, u16)>, String> {
    let one = |text: &str| -> Result<(u16, u16), String> {
        let bad = || format!("`{text}` is not a status or range like \"200-399\"");
        let (lo, hi) = text.split_once('-').unwrap_or((text, text));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(bad());
        }
        Ok((lo, hi))
    };
    match spec {
        StatusSpec::One(s) => Ok(vec![one(&s.to_string())?]),
        StatusSpec::Many(items) => {
            if items.is_empty() {
                return Err("needs at least one status".into());
            }
            items.iter().map(|i| one(&i.to_string())).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_group_has_every_default() {
        let server = Server {
            addr: "127.0.0.1:9".parse().unwrap(),
            weight: 2,
            max_connections: None,
            backup: false,
        };
        let up = Upstream::with_defaults("svc-v1", server.clone());
        assert_eq!(up.name, "svc-v1");
        assert_eq!(up.servers, [server]);
        assert_eq!(up.balance, Balance::RoundRobin);
        assert_eq!(up.retries, 2);
        assert_eq!(up.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn status_specs_parse_as_ranges() {
        assert_eq!(
            parse_statuses(&StatusSpec::One(StatusItem::Text("200-399".into()))),
            Ok(vec![(200, 399)])
        );
        assert!(parse_statuses(&StatusSpec::One(StatusItem::Text("399-200".into()))).is_err());
        assert!(parse_statuses(&StatusSpec::Many(vec![
            StatusItem::Num(200),
            StatusItem::Text("x".into())
        ]))
        .is_err());
    }
}
