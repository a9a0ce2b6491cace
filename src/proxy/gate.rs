//! What is decided about a request before it goes anywhere: refusals (`allow` / `deny`,
//! a route's `limit`), answers made here (the https redirect, `respond`, `redirect`),
//! and whether it asks for a tunnel. Called by `head::prepare` while the head is still
//! borrowed from the connection buffer; no I/O.

use super::head::{request_hash, Head, Prep};
use crate::config::{Balance, LocalAnswer, Route};
use crate::error::ProxyError;
use crate::http::request::Request;
use crate::http::{strip_port, Framing};
use crate::route::RequestView;

/// Before routing: `[server]`'s `allow` / `deny`, and the https redirect of a
/// `redirect_https` listener (its `Location` into `out`). True when decided.
pub(super) fn before_route(
    p: &Prep<'_>,
    req: &Request<'_, '_>,
    head: &mut Head,
    out: &mut Vec<u8>,
) -> bool {
    let snap = p.gen.snap();
    if !snap.server.access.is_empty() && !snap.server.access.admits(p.ip) {
        head.refusal = Some((ProxyError::Forbidden, None));
        return true;
    }
    if p.redirect {
        https_location(out, req.host, snap.https_port, req.path, req.query);
        return true;
    }
    false
}

/// At the matched route: its refusals, then its own answer (`respond`, or `redirect`
/// with its `Location` into `out`). True when decided.
pub(super) fn at_route(
    p: &Prep<'_>,
    req: &Request<'_, '_>,
    view: &RequestView<'_>,
    (index, route): (usize, &Route),
    head: &mut Head,
    out: &mut Vec<u8>,
) -> bool {
    if let Some(err) = refused(p, index, route, view) {
        head.refusal = Some((err, Some(index)));
        return true;
    }
    let Some(local) = &route.local else {
        return false;
    };
    head.local = Some(index);
    if let LocalAnswer::Redirect { to, .. } = local {
        let target = RedirectTarget {
            host: req.host,
            path: req.path,
            query: req.query,
            scheme: p.scheme,
        };
        target.write(to, out);
    }
    true
}

/// The protocol a bodiless request asks to switch to, when the config tunnels it
/// (allocates only for such a request).
pub(super) fn upgrade(allowed: &[String], req: &Request<'_, '_>) -> Option<Box<str>> {
    req.upgrade
        .filter(|_| req.body == Framing::None)
        .and_then(|value| tunnelled(allowed, value))
        .map(Into::into)
}

/// Why route `index` refuses this request now, if it does: its `allow` / `deny`, then a
/// token from its `limit` (taken here: a refused request takes none).
fn refused(
    p: &Prep<'_>,
    index: usize,
    route: &Route,
    view: &RequestView<'_>,
) -> Option<ProxyError> {
    if !route.access.is_empty() && !route.access.admits(p.ip) {
        return Some(ProxyError::Forbidden);
    }
    let (limit, limiter) = (route.limit.as_ref()?, p.gen.limiter(index)?);
    // A request without the key (no such header or cookie) is not limited.
    let key = request_hash(Balance::RoundRobin, Some(&limit.key), view, p.peer)?;
    limiter
        .take(key, p.shard.now())
        .err()
        .map(ProxyError::TooManyRequests)
}

/// The protocol an `Upgrade` value asks for first (its name, lowercase, without a
/// `/version`), when `allowed` lists it.
fn tunnelled(allowed: &[String], value: &[u8]) -> Option<String> {
    let name = first_protocol(value)?;
    allowed
        .iter()
        .find(|p| p.eq_ignore_ascii_case(name))
        .cloned()
}

/// The name of the first protocol an `Upgrade` value lists (`websocket` in
/// `websocket/13, h2c`).
pub(super) fn first_protocol(value: &[u8]) -> Option<&str> {
    let first = value.split(|&b| b == b',').next()?;
    let name = crate::http::trim(first).split(|&b| b == b'/').next()?;
    std::str::from_utf8(crate::http::trim(name)).ok()
}

/// Writes `https://HOST[:PORT]TARGET` into `out`: the request's host without its port,
/// the TLS listener's port unless it is 443, and the target as the client sent it.
fn https_location(out: &mut Vec<u8>, host: &str, port: Option<u16>, path: &str, query: &str) {
    out.extend_from_slice(b"https://");
    out.extend_from_slice(strip_port(host).as_bytes());
    if let Some(p) = port.filter(|&p| p != 443) {
        out.push(b':');
        crate::http::rewrite::push_u64(out, u64::from(p));
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(query.as_bytes());
}

/// What a redirect's variables are filled from.
struct RedirectTarget<'a> {
    host: &'a str,
    /// The path as sent.
    path: &'a str,
    /// The query with its `?`, or empty.
    query: &'a str,
    scheme: &'a str,
}

impl RedirectTarget<'_> {
    /// Writes the `Location` for `to` into `out`.
    fn write(&self, to: &[crate::config::RedirectPart], out: &mut Vec<u8>) {
        use crate::config::{RedirectPart, RedirectVar};
        for part in to {
            let text = match part {
                RedirectPart::Lit(l) => l.as_str(),
                RedirectPart::Var(RedirectVar::Host) => strip_port(self.host),
                RedirectPart::Var(RedirectVar::HttpHost) => self.host,
                RedirectPart::Var(RedirectVar::Uri) => self.path,
                RedirectPart::Var(RedirectVar::Args) => self.query.strip_prefix('?').unwrap_or(""),
                RedirectPart::Var(RedirectVar::Scheme) => self.scheme,
                RedirectPart::Var(RedirectVar::RequestUri) => {
                    out.extend_from_slice(self.path.as_bytes());
                    self.query
                }
            };
            out.extend_from_slice(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_protocols_are_tunnelled_by_their_first_name() {
        let allowed = vec!["websocket".to_string()];
        assert_eq!(tunnelled(&allowed, b"WebSocket"), Some("websocket".into()));
        assert_eq!(
            tunnelled(&allowed, b" websocket/13 , h2c"),
            Some("websocket".into())
        );
        assert_eq!(tunnelled(&allowed, b"h2c, websocket"), None);
        assert_eq!(tunnelled(&allowed, b""), None);
        assert_eq!(first_protocol(b"h2c/1, x"), Some("h2c"));
    }
}
