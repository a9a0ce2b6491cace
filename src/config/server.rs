//! `[server]` validated: listen entries (TLS, PROXY protocol), the https redirect,
//! client-side limits and timeouts, address lists, upgrade protocols. Runs where configs
//! load; nothing here is on the request path.

use super::raw::{OneOrMany, RawListen, RawServer};
use super::{all_interfaces, resolve, Access, Cidr, ConfigError, HeaderEdits, Validator};
use crate::error::ErrorFormat;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

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

impl Validator<'_> {
    /// `[server]`, validated.
    pub(super) fn server(&self, s: RawServer) -> Result<ServerConfig, ConfigError> {
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
        Ok(server)
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
        raw: super::raw::RawTls,
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
}
