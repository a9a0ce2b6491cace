//! Configuration: `config.toml` parsed into `RawConfig`, then validated into `Config`.
//!
//! `Config` is plain data, immutable once built. It does not decide identity or
//! derived tables: `snapshot` turns it into what workers run (server ids, the route
//! index, balancer rings), on the control thread, so a reload can swap it whole.
//! Runs on whichever thread loads a file: the main thread at start, the control thread
//! on reload; nothing here is on the request path.

pub mod cache;
pub mod local;
mod raw;
pub mod routes;
pub mod show;
pub mod units;
pub mod upstream;

pub use crate::http::edits::{HeaderEdits, Template, Var};
pub use cache::{CacheConfig, KeyPart, RouteCache};
pub use local::{Access, Cidr, LocalAnswer, RateLimit, RedirectPart, RedirectVar};
pub use routes::{HostMatch, NamePart, NameTemplate, PathMatch, Route, Target, ValueMatch};
pub use upstream::{Balance, HashKey, HealthCheck, RetryOn, Server, Upstream};

use crate::error::ErrorFormat;
use raw::{OneOrMany, RawConfig, RawListen};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Index of an upstream group in `Config::upstreams` (and in the snapshot built from it).
pub type UpstreamId = usize;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (file path), for messages.
    pub origin: String,
    /// `[server]`: listeners, workers, client-side limits and timeouts.
    pub server: ServerConfig,
    /// Upstream groups in name order, indexed by `UpstreamId`; each owns its servers.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order: the first that matches wins.
    pub routes: Vec<Route>,
    /// Some header edit uses `$request_id`: every request then gets an `X-Request-Id`.
    pub request_ids: bool,
    /// `[admin]`: the admin API, when configured.
    pub admin: Option<AdminConfig>,
    /// `[log]`: the access log and the event log's level.
    pub log: LogConfig,
    /// `[cache]`: the response cache's bound and defaults (used by routes with `cache`).
    pub cache: CacheConfig,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// Where access log lines go; off when `None`.
    pub access: Option<AccessTarget>,
    /// How access log lines are written.
    pub format: AccessFormat,
    /// The least severe event-log level written.
    pub level: LogLevel,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// The process's standard output.
    Stdout,
    /// A file, appended to (reopened on SIGUSR1, for logrotate).
    File(std::path::PathBuf),
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// nginx's and Apache's `combined`, with ringway's timings appended.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl From<LogLevel> for crate::log::Level {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Info => crate::log::Level::Info,
            LogLevel::Warn => crate::log::Level::Warn,
            LogLevel::Error => crate::log::Level::Error,
        }
    }
}

/// `[log] level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything: lifecycle events, state changes, faults.
    #[default]
    Info,
    /// Warnings and errors only.
    Warn,
    /// Errors only.
    Error,
}

/// `[admin]`: where the admin API listens and the token it wants.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The admin listener's address (port 0: any free port, chosen at bind).
    pub listen: SocketAddr,
    /// When set, every admin request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Workers count requests for `GET /metrics` (on by default).
    pub metrics: bool,
}

impl std::fmt::Debug for AdminConfig {
    // The token is a secret: never in logs, `check` output or `GET /config`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// One `listen` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The address as configured (port 0: any free port, chosen at bind).
    pub addr: SocketAddr,
    /// Written as `:port`: all interfaces, IPv6 and IPv4 on one dual-stack socket
    /// (IPv4 only where the host has no IPv6). `addr` is then `[::]:port`.
    pub all_interfaces: bool,
    /// It serves TLS (its certificates: `ServerConfig::tls`). Part of the entry's
    /// identity: a reload that turns TLS on or off for an address rebinds it.
    pub tls: bool,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.all_interfaces {
            write!(f, ":{}", self.addr.port())
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

/// Client-side settings from `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses to listen on; each worker binds its own SO_REUSEPORT socket on each.
    pub listen: Vec<Listen>,
    /// Number of worker threads (one runtime each, pinned to a core).
    pub workers: usize,
    /// The whole request head must arrive within this (slowloris defence).
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive client connection.
    pub keepalive_timeout: Duration,
    /// Longest gap allowed between two reads of a request body.
    pub body_timeout: Duration,
    /// Largest request head (request line plus headers); 431 beyond.
    pub max_header_bytes: usize,
    /// Most header fields in one request; 431 beyond.
    pub max_headers: usize,
    /// Longest request line; 414 beyond.
    pub max_request_line: usize,
    /// How proxy-made error responses are written.
    pub error_format: ErrorFormat,
    /// Edits to every forwarded request's headers (before a route's own).
    pub request_headers: HeaderEdits,
    /// Edits to every response's headers (before a route's own).
    pub response_headers: HeaderEdits,
    /// Graceful drain limit: after SIGTERM, connections still open after this are cut.
    pub shutdown_timeout: Duration,
    /// The TLS listen entries and their certificates (the others are plain HTTP).
    pub tls: Vec<(Listen, crate::tls::ServerTls)>,
    /// A plain listener whose requests are all answered 308 to `https://`.
    pub redirect_https: Option<Listen>,
    /// `Upgrade` protocols tunnelled after a 101 (lowercase; `websocket` by default).
    pub upgrade_protocols: Vec<String>,
    /// A tunnel with no traffic either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Largest request body (routes may override): 413 beyond.
    pub max_body_bytes: u64,
    /// Most client connections open at once over all workers (split evenly): at the
    /// limit, workers stop accepting and close their oldest idle connections.
    pub max_connections: usize,
    /// `max_connections` was not set: it is a share of the open-file limit.
    pub max_connections_derived: bool,
    /// `allow` / `deny` for every route (checked before a route's own).
    pub access: Access,
    /// The listen entries that expect a PROXY protocol header first.
    pub proxy_protocol: Vec<Listen>,
    /// Peers allowed to send a PROXY header (`trusted_proxies`).
    pub trusted_proxies: Vec<Cidr>,
}

impl ServerConfig {
    /// The certificates of listen entry `l`, when it serves TLS.
    pub fn tls_of(&self, l: &Listen) -> Option<&crate::tls::ServerTls> {
        self.tls.iter().find(|(t, _)| t == l).map(|(_, c)| c)
    }
}

/// Why a config was rejected; every variant names the file and, where it can, the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read config: {source}")]
    Io {
        /// The path.
        origin: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys, wrong types, bad units.
    #[error("{origin}:{line}: {message}")]
    Parse {
        /// The path.
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A value that parsed but makes no sense.
    #[error("{origin}:{line}: `{key}`: {message}")]
    Invalid {
        /// The path.
        origin: String,
        /// 1-based line of the key, 0 when it has none (a default).
        line: usize,
        /// Dotted path of the key, e.g. `upstreams.web.servers`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            origin: origin.clone(),
            source,
        })?;
        Config::parse(&text, &origin)
    }

    /// Parses and validates config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // One line: the parser's messages may span several, and logs are one per event.
            let message = e.message().trim().replace('\n', "; ");
            let message = message.as_str();
            ConfigError::Parse {
                origin: origin.to_string(),
                line: e.span().map_or(1, |s| line_of(text, s.start)),
                // Values rejected while deserializing (durations, sizes) come without
                // their key: name it, as every other config error does.
                message: match e.span().and_then(|s| key_at(text, s.start)) {
                    Some(key)
                        if !message
                            .contains(&format!("`{}`", key.rsplit('.').next().unwrap_or(""))) =>
                    {
                        format!("`{key}`: {message}")
                    }
                    _ => message.to_string(),
                },
            }
        })?;
        Validator { text, origin }.validate(raw)
    }

    /// One line describing what this config runs, for `ringway check` and the startup log.
    pub fn summary(&self) -> String {
        let listen: Vec<String> = self
            .server
            .listen
            .iter()
            .map(|a| match a.tls {
                true => format!("{a} (tls)"),
                false => a.to_string(),
            })
            .collect();
        format!(
            "listen {} | {} workers | {} upstreams, {} servers | {} routes",
            listen.join(", "),
            self.server.workers,
            self.upstreams.len(),
            self.server_count(),
            self.routes.len()
        )
    }

    /// Servers over all groups.
    pub fn server_count(&self) -> usize {
        self.upstreams.iter().map(|u| u.servers.len()).sum()
    }

    /// True when some route caches responses.
    pub fn caching(&self) -> bool {
        self.routes.iter().any(|r| r.cache.is_some())
    }

    /// True when workers count requests for `GET /metrics`.
    pub fn metrics(&self) -> bool {
        self.admin.as_ref().is_some_and(|a| a.metrics)
    }

    /// The group named `name`.
    pub fn upstream(&self, name: &str) -> Option<(UpstreamId, &Upstream)> {
        self.upstreams
            .iter()
            .enumerate()
            .find(|(_, u)| u.name == name)
    }
}

/// Client connections allowed when `max_connections` is not set: half the open-file
/// limit (each client connection may hold an upstream connection too) less a reserve
/// for listeners, pools' spares, log files and the admin API; at least 16.
pub fn default_max_connections() -> usize {
    const RESERVE: u64 = 64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which outlives the call.
    let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
        0 => lim.rlim_cur,
        _ => 1024,
    };
    let share = soft.saturating_sub(RESERVE) / 2;
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(16, 10_000_000)
}

/// The dotted key (`upstreams.web.connect_timeout`, `routes[1].path`) of the
/// `key = value` line at `offset`, from the nearest table header above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let (key, _) = text[start..].lines().next()?.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    let before = &text[..start];
    let table = before.lines().rev().find_map(|l| {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim();
            let index = before
                .lines()
                .filter(|x| x.trim().starts_with("[[") && x.contains(name))
                .count();
            Some(format!("{name}[{}]", index.saturating_sub(1)))
        } else {
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(n, _)| n.trim().to_string())
        }
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: String,
        message: String,
    ) -> Result<T, ConfigError> {
        let line = if span.is_empty() && span.start == 0 {
            0
        } else {
            line_of(self.text, span.start)
        };
        Err(ConfigError::Invalid {
            origin: self.origin.to_string(),
            line,
            key,
            message,
        })
    }

    fn edits(
        &self,
        raw: Option<Spanned<raw::RawHeaderEdits>>,
        key: &str,
        response: bool,
    ) -> Result<HeaderEdits, ConfigError> {
        match raw {
            None => Ok(HeaderEdits::default()),
            Some(e) => {
                let span = e.span();
                header_edits(e.into_inner(), response)
                    .or_else(|(sub, m)| self.err(span, format!("{key}.{sub}"), m))
            }
        }
    }

    /// An integer in `min..=max`, or an error naming the key and the range.
    fn in_range(
        &self,
        v: &Spanned<i64>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<usize, ConfigError> {
        let n = *v.get_ref();
        if n < min || n > max {
            return self.err(
                v.span(),
                key.into(),
                format!("must be between {min} and {max}, got {n}"),
            );
        }
        Ok(n as usize)
    }

    /// A path from the config, relative to the config file's directory.
    pub(super) fn path(&self, p: &str) -> std::path::PathBuf {
        let p = Path::new(p);
        let origin = Path::new(self.origin);
        match origin.parent() {
            Some(dir) if p.is_relative() && origin.is_file() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// The 1-based line of `key = ...` under `[table]` (0 when not written: a default).
    pub(super) fn line_of_key(&self, table: &str, key: &str) -> usize {
        let mut in_table = table.is_empty();
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                in_table = t.trim_matches(|c| c == '[' || c == ']').trim() == table;
                continue;
            }
            if in_table && t.split('=').next().is_some_and(|k| k.trim() == key) && t.contains('=') {
                return i + 1;
            }
        }
        0
    }

    /// Every `[server]` duration that must be more than zero is (a zero header or
    /// keep-alive timeout would fail every request).
    fn positive_durations(&self, s: &ServerConfig) -> Result<(), ConfigError> {
        for (key, d) in [
            ("header_timeout", s.header_timeout),
            ("keepalive_timeout", s.keepalive_timeout),
            ("body_timeout", s.body_timeout),
            ("tunnel_idle_timeout", s.tunnel_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    origin: self.origin.to_string(),
                    line: self.line_of_key("server", key),
                    key: format!("server.{key}"),
                    message: "must be more than 0s".into(),
                });
            }
        }
        Ok(())
    }

    /// `[server] trusted_proxies`: needed as soon as a listener takes PROXY headers.
    fn trusted_proxies(
        &self,
        raw: Option<&Spanned<Vec<String>>>,
        proxied: &[Listen],
    ) -> Result<Vec<Cidr>, ConfigError> {
        let key = || "server.trusted_proxies".to_string();
        let list = raw.map_or(&[][..], |r| r.get_ref().as_slice());
        let span = raw.map_or(0..0, |r| r.span());
        let mut out = Vec::new();
        for t in list {
            out.push(Cidr::parse(t).or_else(|m| self.err(span.clone(), key(), m))?);
        }
        if out.is_empty() && !proxied.is_empty() {
            return self.err(
                span,
                key(),
                format!(
                    "`{}` takes PROXY headers: list the balancers allowed to send them (CIDRs)",
                    proxied[0]
                ),
            );
        }
        Ok(out)
    }

    /// `allow` / `deny` lists under `table` (`server`, `routes[i]`).
    pub(super) fn access(
        &self,
        allow: Option<&Spanned<Vec<String>>>,
        deny: Option<&Spanned<Vec<String>>>,
        table: &str,
    ) -> Result<Access, ConfigError> {
        let empty = Vec::new();
        let (a, d) = (
            allow.map_or(&empty, |a| a.get_ref()),
            deny.map_or(&empty, |d| d.get_ref()),
        );
        Access::parse(a, d).or_else(|(which, m)| {
            let span = match which {
                "allow" => allow.map(|a| a.span()),
                _ => deny.map(|d| d.span()),
            };
            self.err(span.unwrap_or(0..0), format!("{table}.{which}"), m)
        })
    }

    /// A listen entry's `tls`, its certificates loaded and checked.
    fn listen_tls(
        &self,
        raw: raw::RawTls,
        addr: &str,
        span: std::ops::Range<usize>,
    ) -> Result<crate::tls::ServerTls, ConfigError> {
        let files = match (raw.cert, raw.key, raw.certs) {
            (Some(cert), Some(key), None) => vec![(cert, key)],
            (None, None, Some(list)) if !list.is_empty() => {
                list.into_iter().map(|p| (p.cert, p.key)).collect()
            }
            _ => {
                return self.err(
                    span,
                    "server.listen.tls".into(),
                    format!("`{addr}`: give `cert` and `key`, or `certs = [{{ cert, key }}, ...]`"),
                )
            }
        };
        let files = files
            .into_iter()
            .map(|(cert, key)| crate::tls::CertFiles {
                cert: self.path(&cert),
                key: self.path(&key),
            })
            .collect();
        crate::tls::ServerTls::load(files)
            .or_else(|e| self.err(span, "server.listen.tls".into(), format!("`{addr}`: {e}")))
    }

    /// `redirect_https`: one of the plain listen entries, with a TLS one to send to.
    fn redirect_https(
        &self,
        raw: &Spanned<String>,
        listen: &[Listen],
        tls: &[(Listen, crate::tls::ServerTls)],
    ) -> Result<Listen, ConfigError> {
        let key = || "server.redirect_https".to_string();
        let text = raw.get_ref();
        let wanted = match resolve(text) {
            Ok(addr) => Listen {
                addr,
                all_interfaces: false,
                tls: false,
            },
            Err(m) => match all_interfaces(text) {
                Some(addr) => Listen {
                    addr,
                    all_interfaces: true,
                    tls: false,
                },
                None => return self.err(raw.span(), key(), m),
            },
        };
        if !listen.contains(&wanted) {
            return self.err(
                raw.span(),
                key(),
                format!("`{text}` is not a plain (non-TLS) entry of server.listen"),
            );
        }
        if tls.is_empty() {
            return self.err(
                raw.span(),
                key(),
                "needs a TLS listener to redirect to".into(),
            );
        }
        Ok(wanted)
    }

    fn count(&self, v: &Spanned<i64>, key: &str, max: i64) -> Result<usize, ConfigError> {
        self.in_range(v, key, 0, max)
    }

    fn positive(&self, v: &Spanned<i64>, key: &str, max: i64) -> Result<usize, ConfigError> {
        self.in_range(v, key, 1, max)
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let s = raw.server;
        let listen_span = s.listen.span();
        let listen_strs = match s.listen.into_inner() {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(v) => v,
        };
        if listen_strs.is_empty() {
            return self.err(
                listen_span,
                "server.listen".into(),
                "needs at least one address".into(),
            );
        }
        let mut listen: Vec<Listen> = Vec::new();
        let mut tls = Vec::new();
        let mut proxy_protocol = Vec::new();
        for raw_entry in listen_strs {
            let (a, raw_tls, proxied) = match raw_entry {
                RawListen::Addr(a) => (a, None, false),
                RawListen::Table(t) => (t.addr, t.tls, t.proxy_protocol),
            };
            let a = &a;
            let tls_on = raw_tls.is_some();
            let entry = match resolve(a) {
                Ok(addr) => Listen {
                    addr,
                    all_interfaces: false,
                    tls: tls_on,
                },
                Err(m) => match all_interfaces(a) {
                    Some(addr) => Listen {
                        addr,
                        all_interfaces: true,
                        tls: tls_on,
                    },
                    None => return self.err(listen_span, "server.listen".into(), m),
                },
            };
            if listen.iter().any(|l| l.addr == entry.addr) && entry.addr.port() != 0 {
                return self.err(
                    listen_span,
                    "server.listen".into(),
                    format!("`{a}` is listed twice"),
                );
            }
            if let Some(t) = raw_tls {
                tls.push((entry, self.listen_tls(t, a, listen_span.clone())?));
            }
            if proxied {
                proxy_protocol.push(entry);
            }
            listen.push(entry);
        }
        let redirect_https = match &s.redirect_https {
            None => None,
            Some(r) => Some(self.redirect_https(r, &listen, &tls)?),
        };
        let upgrade_protocols = match &s.upgrade_protocols {
            None => vec!["websocket".to_string()],
            Some(list) => {
                let mut out = Vec::new();
                for p in list.get_ref() {
                    if p.is_empty() || !p.bytes().all(crate::http::is_token_byte) {
                        return self.err(
                            list.span(),
                            "server.upgrade_protocols".into(),
                            format!("`{p}` is not a protocol name (an HTTP token)"),
                        );
                    }
                    out.push(p.to_ascii_lowercase());
                }
                out
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = match &s.workers {
            Some(w) => self.positive(w, "server.workers", 1024)?,
            None => cores,
        };
        let max_header_bytes = s.max_header_bytes.get_ref().0;
        if !(1024..=1 << 20).contains(&max_header_bytes) {
            return self.err(
                s.max_header_bytes.span(),
                "server.max_header_bytes".into(),
                "must be between 1KiB and 1MiB".into(),
            );
        }
        let max_request_line = s.max_request_line.get_ref().0;
        if !(64..=max_header_bytes).contains(&max_request_line) {
            return self.err(
                s.max_request_line.span(),
                "server.max_request_line".into(),
                "must be between 64B and max_header_bytes".into(),
            );
        }
        let server = ServerConfig {
            listen,
            workers,
            header_timeout: s.header_timeout.0,
            keepalive_timeout: s.keepalive_timeout.0,
            body_timeout: s.body_timeout.0,
            max_header_bytes: max_header_bytes as usize,
            max_headers: self.positive(&s.max_headers, "server.max_headers", 1000)?,
            max_request_line: max_request_line as usize,
            error_format: match s
                .error_format
                .as_ref()
                .map(|f| (f.get_ref().as_str(), f.span()))
            {
                None | Some(("text", _)) => ErrorFormat::Text,
                Some(("json", _)) => ErrorFormat::Json,
                Some((other, span)) => {
                    return self.err(
                        span,
                        "server.error_format".into(),
                        format!("`{other}` is not a format (use \"text\" or \"json\")"),
                    )
                }
            },
            request_headers: self.edits(s.request_headers, "server.request_headers", false)?,
            response_headers: self.edits(s.response_headers, "server.response_headers", true)?,
            shutdown_timeout: s.shutdown_timeout.0,
            tls,
            redirect_https,
            upgrade_protocols,
            tunnel_idle_timeout: s.tunnel_idle_timeout.0,
            max_body_bytes: s.max_body_bytes.get_ref().0,
            max_connections: match &s.max_connections {
                Some(m) => self.positive(m, "server.max_connections", 10_000_000)?,
                None => default_max_connections(),
            },
            max_connections_derived: s.max_connections.is_none(),
            access: self.access(s.allow.as_ref(), s.deny.as_ref(), "server")?,
            trusted_proxies: self.trusted_proxies(s.trusted_proxies.as_ref(), &proxy_protocol)?,
            proxy_protocol,
        };
        self.positive_durations(&server)?;

        let mut upstreams = Vec::new();
        for (name, up) in raw.upstreams {
            upstreams.push(self.upstream(name, up.into_inner())?);
        }

        if raw.routes.is_empty() {
            return self.err(
                0..0,
                "routes".into(),
                "at least one [[routes]] entry is needed".into(),
            );
        }
        let cache = self.cache(raw.cache)?;
        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            routes.push(self.route(i, r.into_inner(), &upstreams, &cache)?);
        }
        let request_ids = server.request_headers.uses(Var::RequestId)
            || server.response_headers.uses(Var::RequestId)
            || routes.iter().any(|r| {
                r.request_headers.uses(Var::RequestId) || r.response_headers.uses(Var::RequestId)
            });

        let admin = match raw.admin {
            None => None,
            Some(a) => Some(self.admin(a)?),
        };
        let log = match raw.log {
            None => LogConfig::default(),
            Some(l) => self.log(l.into_inner())?,
        };
        Ok(Config {
            origin: self.origin.to_string(),
            server,
            upstreams,
            routes,
            request_ids,
            admin,
            log,
            cache,
        })
    }

    /// `[log]`.
    fn log(&self, raw: raw::RawLog) -> Result<LogConfig, ConfigError> {
        let access = match raw.access {
            None => None,
            Some(a) if a.get_ref() == "stdout" => Some(AccessTarget::Stdout),
            Some(a) if a.get_ref().is_empty() => {
                return self.err(
                    a.span(),
                    "log.access".into(),
                    "needs \"stdout\" or a file path".into(),
                )
            }
            Some(a) => Some(AccessTarget::File(a.into_inner().into())),
        };
        let format = match raw
            .format
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span()))
        {
            None | Some(("combined", _)) => AccessFormat::Combined,
            Some(("json", _)) => AccessFormat::Json,
            Some((other, span)) => {
                return self.err(
                    span,
                    "log.format".into(),
                    format!("`{other}` is not a format (use \"combined\" or \"json\")"),
                )
            }
        };
        let level = match raw.level.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
            None | Some(("info", _)) => LogLevel::Info,
            Some(("warn", _)) => LogLevel::Warn,
            Some(("error", _)) => LogLevel::Error,
            Some((other, span)) => {
                return self.err(
                    span,
                    "log.level".into(),
                    format!("`{other}` is not a level (use \"info\", \"warn\" or \"error\")"),
                )
            }
        };
        Ok(LogConfig {
            access,
            format,
            level,
        })
    }

    /// `[admin]`: a loopback address, or any address with a token.
    fn admin(&self, raw: Spanned<raw::RawAdmin>) -> Result<AdminConfig, ConfigError> {
        let raw = raw.into_inner();
        let span = raw.listen.span();
        let listen = match resolve(raw.listen.get_ref()) {
            Ok(a) => a,
            Err(m) => return self.err(span, "admin.listen".into(), m),
        };
        let token = match raw.token {
            None => None,
            Some(t) => {
                let bad =
                    t.get_ref().is_empty() || !t.get_ref().bytes().all(|b| b.is_ascii_graphic());
                if bad {
                    return self.err(
                        t.span(),
                        "admin.token".into(),
                        "must be non-empty printable ASCII without spaces".into(),
                    );
                }
                Some(t.into_inner())
            }
        };
        if token.is_none() && !listen.ip().is_loopback() {
            return self.err(
                span,
                "admin.listen".into(),
                format!(
                    "`{listen}` is not a loopback address: set `admin.token` so that only \
                     operators can reload or change upstreams"
                ),
            );
        }
        Ok(AdminConfig {
            listen,
            token,
            metrics: raw.metrics,
        })
    }
}

/// Validates raw header edits; the error is `(sub-key, message)`.
fn header_edits(raw: raw::RawHeaderEdits, response: bool) -> Result<HeaderEdits, (String, String)> {
    use crate::http::edits::check_name;
    let mut edits = HeaderEdits::default();
    for (kind, map, out) in [
        ("set", raw.set, &mut edits.set),
        ("add", raw.add, &mut edits.add),
    ] {
        for (name, value) in map {
            check_name(&name).map_err(|m| (kind.to_string(), m))?;
            let t = Template::parse(&value, response).map_err(|m| (format!("{kind}.{name}"), m))?;
            out.push((name, t));
        }
    }
    for name in raw.remove {
        check_name(&name).map_err(|m| ("remove".to_string(), m))?;
        edits.remove.push(name);
    }
    Ok(edits)
}

/// `:port`: every interface, as the IPv6 wildcard (bound dual-stack).
fn all_interfaces(text: &str) -> Option<SocketAddr> {
    let port = text.strip_prefix(':')?.parse::<u16>().ok()?;
    Some(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
}

/// Parses `ip:port` or `host:port` (resolved once, now).
fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !text.contains(':') || text.starts_with(':') {
        return Err(format!(
            "`{text}` is not an address: expected host:port, e.g. 127.0.0.1:9001"
        ));
    }
    match text.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("`{text}` resolves to no address")),
        Err(e) => Err(format!("`{text}` is not an address ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
workers = 2
[upstreams.web]
servers = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
[upstreams.api]
servers = ["127.0.0.1:9003"]
[[routes]]
path_prefix = "/"
upstream = "web"
[[routes]]
path_prefix = "/api"
upstream = "api"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_zero_timeout_is_rejected_naming_its_key_and_line() {
        let server = GOOD.replace("workers = 2", "workers = 2\nheader_timeout = \"0s\"");
        assert_eq!(
            err(&server),
            "test.toml:5: `server.header_timeout`: must be more than 0s"
        );
        let keepalive = GOOD.replace("workers = 2", "workers = 2\nkeepalive_timeout = \"0ms\"");
        assert!(err(&keepalive).contains("`server.keepalive_timeout`: must be more than 0s"));
        let up = GOOD.replace(
            "servers = [\"127.0.0.1:9003\"]",
            "servers = [\"127.0.0.1:9003\"]\nconnect_timeout = \"0s\"",
        );
        assert_eq!(
            err(&up),
            "test.toml:9: `upstreams.api.connect_timeout`: must be more than 0s"
        );
    }

    #[test]
    fn max_body_bytes_and_max_connections_have_defaults_and_overrides() {
        let c = Config::parse(GOOD, "t").unwrap();
        assert_eq!(c.server.max_body_bytes, 1 << 30);
        assert!(c.server.max_connections >= 16 && c.server.max_connections_derived);
        let text = GOOD
            .replace(
                "workers = 2",
                "workers = 2\nmax_body_bytes = \"1KiB\"\nmax_connections = 100",
            )
            .replace(
                "upstream = \"api\"",
                "upstream = \"api\"\nmax_body_bytes = \"2MiB\"",
            );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(
            (c.server.max_body_bytes, c.server.max_connections),
            (1024, 100)
        );
        assert_eq!(c.routes[1].max_body_bytes, Some(2 << 20));
        assert!(
            err(&GOOD.replace("workers = 2", "workers = 2\nmax_connections = 0"))
                .contains("max_connections")
        );
    }

    #[test]
    fn a_good_config_validates_with_defaults() {
        let c = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.server.max_header_bytes, 16384);
        assert_eq!(c.server_count(), 3);
        let (_, web) = c.upstream("web").unwrap();
        assert_eq!(
            web.servers
                .iter()
                .find(|s| s.addr.port() == 9002)
                .unwrap()
                .weight,
            3
        );
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(30));
        assert!(
            matches!(&c.routes[1].path, PathMatch::Prefix(p) if p == "/api"),
            "file order is kept"
        );
        assert_eq!(
            c.routes[1].upstream,
            Target::Group(0),
            "groups sort by name: api first"
        );
        assert_eq!(c.upstreams[0].name, "api");
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../../config.toml");
        Config::parse(text, "config.toml").unwrap();
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        assert!(e.contains("test.toml:3") && e.contains("lisen"), "{e}");
    }

    #[test]
    fn a_route_to_a_missing_upstream_is_rejected() {
        let e =
            err("[upstreams.web]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"nope\"\n");
        assert!(
            e.contains("routes[0].upstream") && e.contains("nope") && e.contains(":4"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_server_list_is_rejected() {
        let e = err("[upstreams.web]\nservers=[]\n[[routes]]\nupstream = \"web\"\n");
        assert!(
            e.contains("upstreams.web.servers") && e.contains(":2"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_address_or_duration_is_rejected() {
        let e = err("[upstreams.web]\nservers=[\"nonsense\"]\n[[routes]]\nupstream = \"web\"\n");
        assert!(
            e.contains("upstreams.web.servers") && e.contains("nonsense"),
            "{e}"
        );
        let e = err("[upstreams.web]\nservers=[\"127.0.0.1:1\"]\nconnect_timeout = \"3 fortnights\"\n[[routes]]\nupstream = \"web\"\n");
        assert!(e.contains(":3") && e.contains("fortnights"), "{e}");
        let e = err("[server]\nlisten = \"127.0.0.1\"\n");
        assert!(e.contains("server.listen"), "{e}");
    }

    #[test]
    fn a_group_named_from_the_path_needs_a_path_regex_with_those_groups() {
        let e = err("[[routes]]\npath_prefix = \"/x\"\nupstream = \"${name}\"\n");
        assert!(
            e.contains("routes[0].upstream") && e.contains("path_regex"),
            "{e}"
        );
        let e = err("[[routes]]\npath_regex = \"^/(?<svc>[a-z]+)/\"\nupstream = \"${name}\"\n");
        assert!(e.contains("`${name}`") && e.contains("svc"), "{e}");
        let c = Config::parse(
            "[[routes]]\npath_regex = \"^/(?<svc>[a-z]+)/\"\nupstream = \"${svc}-v1\"\nstrip_prefix = true\n",
            "t",
        )
        .unwrap();
        assert!(matches!(&c.routes[0].upstream, Target::FromPath(t) if t.text == "${svc}-v1"));
    }

    #[test]
    fn the_admin_listener_needs_a_token_off_loopback() {
        let base = "[upstreams.w]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream=\"w\"\n";
        let c = Config::parse(&format!("{base}[admin]\nlisten = \"127.0.0.1:0\"\n"), "t").unwrap();
        assert_eq!(c.admin.unwrap().token, None);
        let e = err(&format!("{base}[admin]\nlisten = \"0.0.0.0:5555\"\n"));
        assert!(
            e.contains("admin.listen") && e.contains("admin.token"),
            "{e}"
        );
        let c = Config::parse(
            &format!("{base}[admin]\nlisten = \"0.0.0.0:5555\"\ntoken = \"s3cret\"\n"),
            "t",
        )
        .unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.token.as_deref(), Some("s3cret"));
        assert!(
            !format!("{admin:?}").contains("s3cret"),
            "the token is never printed"
        );
        let e = err(&format!(
            "{base}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"a b\"\n"
        ));
        assert!(e.contains("admin.token"), "{e}");
    }

    #[test]
    fn a_bare_port_listens_on_every_interface_dual_stack() {
        let c = Config::parse(
            "[server]\nlisten = [\":8080\", \"127.0.0.1:9\"]\n[upstreams.w]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream=\"w\"\n",
            "t",
        )
        .unwrap();
        let l = &c.server.listen;
        assert_eq!(l[0].addr, "[::]:8080".parse().unwrap());
        assert!(l[0].all_interfaces);
        assert_eq!(l[0].to_string(), ":8080");
        assert!(!l[1].all_interfaces);
    }

    #[test]
    fn a_bad_unit_names_the_dotted_key() {
        let e = err("[upstreams.web]\nservers=[\"127.0.0.1:1\"]\nread_timeout = \"5 parsecs\"\n[[routes]]\nupstream = \"web\"\n[[routes]]\nupstream = \"web\"\npath = 3\n");
        assert!(
            e.contains("`upstreams.web.read_timeout`") && e.contains(":3"),
            "{e}"
        );
        let e = err("[upstreams.web]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"web\"\n[[routes]]\nupstream = \"web\"\npath = 3\n");
        assert!(e.contains("routes[1].path"), "{e}");
    }

    #[test]
    fn an_unknown_policy_is_rejected() {
        let e = err("[upstreams.web]\nservers=[\"127.0.0.1:1\"]\nbalance = \"fastest\"\n[[routes]]\nupstream = \"web\"\n");
        assert!(
            e.contains("upstreams.web.balance") && e.contains("fastest"),
            "{e}"
        );
    }
}
