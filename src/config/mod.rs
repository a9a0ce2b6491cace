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
pub mod server;
pub mod show;
pub mod units;
pub mod upstream;

pub use crate::http::edits::{HeaderEdits, Template, Var};
pub use cache::{CacheConfig, KeyPart, RouteCache};
pub use local::{Access, Cidr, LocalAnswer, RateLimit, RedirectPart, RedirectVar};
pub use routes::{HostMatch, NamePart, NameTemplate, PathMatch, Route, Target, ValueMatch};
pub use server::{default_max_connections, Listen, ServerConfig};
pub use upstream::{Balance, HashKey, HealthCheck, RetryOn, Server, Upstream};

use raw::RawConfig;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
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

    fn count(&self, v: &Spanned<i64>, key: &str, max: i64) -> Result<usize, ConfigError> {
        self.in_range(v, key, 0, max)
    }

    fn positive(&self, v: &Spanned<i64>, key: &str, max: i64) -> Result<usize, ConfigError> {
        self.in_range(v, key, 1, max)
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;

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
    use std::time::Duration;

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
