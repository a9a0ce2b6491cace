//! Reading a request head and preparing it: parse (zero-copy, out of the connection
//! buffer), normalize the path, route, and write the head the upstream will get into
//! `out`. What later steps need is kept in a small [`Head`] after the buffer borrow ends.

use super::Conn;
use crate::buf::Fill;
use crate::config::{Balance, HashKey, PathMatch, Route, UpstreamId, Var};
use crate::error::ProxyError;
use crate::hash::hash_bytes;
use crate::http::request::{self, Limits, Request};
use crate::http::request_id::RequestId;
use crate::http::rewrite::{write_upstream_request, Edits, Forward, Peer, Vars};
use crate::http::{path, strip_port, Framing, Version, MAX_HEADER_SLOTS};
use crate::route::RequestView;
use crate::shard::{Generation, Shard};
use std::mem::MaybeUninit;
use std::time::Instant;

/// What the request head said, kept after the buffer borrow ends.
#[derive(Debug, Clone)]
pub(super) struct Head {
    pub len: usize,
    pub body: Framing,
    /// The connection may carry another request afterwards (the client allows it and
    /// no drain started).
    pub keep_alive: bool,
    pub version: Version,
    pub expect_continue: bool,
    pub is_head: bool,
    /// The matched route's index (in the request's generation).
    pub route: Option<usize>,
    /// The request's key for `ip_hash` / `consistent_hash`, when its group uses one.
    pub hash: Option<u64>,
    /// The method is in the group's `idempotent_methods`: safe to send twice.
    pub idempotent: bool,
    /// `$request_id`, when the config uses it.
    pub request_id: RequestId,
    /// `$host` for response header edits, kept only when they use it.
    pub resp_host: Option<Box<str>>,
}

/// Waits for a complete request head and prepares the upstream head in `out`.
///
/// `Ok(None)`: the client closed or idled out between requests (nothing to answer).
pub(super) async fn read(
    c: &mut Conn<'_>,
    gen: &Generation,
    first: bool,
) -> Result<Option<Head>, ProxyError> {
    let server = &gen.snap().server;
    let limits = Limits {
        max_header_bytes: server.max_header_bytes,
        max_headers: server.max_headers.min(MAX_HEADER_SLOTS),
        max_request_line: server.max_request_line,
    };
    let timers = c.shard.timers();
    let prep = Prep {
        shard: c.shard,
        gen,
        peer: c.peer,
        scheme: c.scheme.as_str(),
    };
    let mut deadline: Option<Instant> = None;
    loop {
        if !c.cbuf.is_empty() {
            if let Some(head) = prepare(&prep, &limits, c.cbuf.data(), c.out)? {
                return Ok(Some(head));
            }
        }
        let (empty, now) = (c.cbuf.is_empty(), c.shard.now());
        let read = c.cbuf.fill(c.client, limits.max_header_bytes);
        let fill = match deadline {
            // Waiting for the first byte of a request: the header timeout on a
            // brand-new connection; between requests, the idle (keep-alive) timeout,
            // which a drain also ends.
            None if empty && first => {
                match timers.timeout_at(now + server.header_timeout, read).await {
                    Some(r) => r,
                    None => return Ok(None),
                }
            }
            None if empty => match timers
                .idle_until(now + server.keepalive_timeout, read)
                .await
            {
                Some(r) => r,
                None => return Ok(None),
            },
            _ => {
                let at = *deadline.get_or_insert(now + server.header_timeout);
                match timers.timeout_at(at, read).await {
                    Some(r) => r,
                    None => return Err(ProxyError::RequestTimeout),
                }
            }
        };
        match fill {
            Ok(Fill::Read(_)) => {
                if deadline.is_none() {
                    deadline = Some(c.shard.now() + server.header_timeout);
                }
            }
            Ok(Fill::Eof) if c.cbuf.is_empty() => return Ok(None),
            Ok(Fill::Eof) => return Err(ProxyError::BadRequest("connection closed mid-head")),
            Ok(Fill::Full) => return Err(ProxyError::HeadersTooLarge("request head too large")),
            Err(_) => return Ok(None),
        }
    }
}

/// What preparing a head needs besides its bytes.
struct Prep<'a> {
    shard: &'a Shard,
    gen: &'a Generation,
    peer: &'a Peer,
    /// `http` or `https`, from the connection's listener.
    scheme: &'static str,
}

/// Parses the head in `data` (synchronously, borrowing it), routes it, and writes the
/// upstream request head into `out`. `Ok(None)`: incomplete, read more.
fn prepare(
    p: &Prep<'_>,
    limits: &Limits,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<Head>, ProxyError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let Some(req) = request::parse(data, &mut slots, limits)? else {
        return Ok(None);
    };
    // Allocates only for the rare path that needs normalizing.
    let mut normalized = Vec::new();
    let path = match path::normalize(req.path, &mut normalized) {
        _ if req.path == "*" => req.path,
        Ok(false) => req.path,
        Ok(true) => {
            std::str::from_utf8(&normalized).map_err(|_| ProxyError::BadRequest("invalid path"))?
        }
        Err(_) => return Err(ProxyError::BadRequest("malformed percent-encoding in path")),
    };
    let view = RequestView {
        method: req.method,
        host: req.host,
        path,
        query: req.query.strip_prefix('?').unwrap_or(""),
        headers: req.headers,
    };
    let mut head = Head {
        len: req.head_len,
        body: req.body,
        // A draining worker answers `Connection: close`, then closes.
        keep_alive: req.keep_alive && !p.shard.draining(),
        version: req.version,
        expect_continue: req.expect_continue,
        is_head: req.is_head(),
        route: None,
        hash: None,
        idempotent: false,
        request_id: RequestId::NONE,
        resp_host: None,
    };
    out.clear();
    let snap = p.gen.snap();
    let Some(index) = snap.router.find(&view) else {
        return Ok(Some(head));
    };
    let route = snap.router.route(index);
    head.route = Some(index);
    let group = &p.gen.group(route.upstream).upstream;
    head.hash = request_hash(group.balance, group.hash_key.as_ref(), &view, p.peer);
    head.idempotent = group.idempotent_methods.iter().any(|m| m == req.method);
    forward(p, route, &req, path, out, &mut head);
    Ok(Some(head))
}

/// Writes the upstream head for a routed request into `out`: the rewritten target, the
/// request id, and the header edits of `[server]` and the route.
fn forward(
    p: &Prep<'_>,
    route: &Route,
    req: &Request<'_, '_>,
    path: &str,
    out: &mut Vec<u8>,
    head: &mut Head,
) {
    let global = &p.gen.snap().server;
    let rest = match &route.path {
        PathMatch::Prefix(p) if p != "/" => &path[p.len()..],
        _ => path,
    };
    let target: [&[u8]; 2] = match (&route.rewrite_prefix, route.strip_prefix) {
        (Some(new), _) if new.ends_with('/') && rest.starts_with('/') => {
            [new.as_bytes(), &rest.as_bytes()[1..]]
        }
        (Some(new), _) => [new.as_bytes(), rest.as_bytes()],
        (None, true) if rest.is_empty() => [b"/", b""],
        (None, true) => [rest.as_bytes(), b""],
        (None, false) => [path.as_bytes(), b""],
    };
    let mut generated = false;
    if p.gen.snap().request_ids {
        let client_id = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
            .map(|h| crate::http::trim(h.value));
        head.request_id = match client_id.and_then(RequestId::from_client) {
            Some(id) => id,
            None => {
                generated = client_id.is_none();
                p.shard.next_request_id()
            }
        };
    }
    let host = strip_port(req.host);
    if global.response_headers.uses(Var::Host) || route.response_headers.uses(Var::Host) {
        head.resp_host = Some(host.into());
    }
    let (peer, scheme) = (p.peer, p.scheme);
    let edits =
        (!global.request_headers.is_empty() || !route.request_headers.is_empty()).then(|| Edits {
            scopes: [&global.request_headers, &route.request_headers],
            vars: Vars {
                peer,
                scheme,
                host: host.as_bytes(),
                request_id: head.request_id.as_bytes(),
                upstream: None,
            },
        });
    let fwd = Forward {
        scheme,
        path: target,
        query: req.query.as_bytes(),
        edits,
        request_id: generated.then(|| head.request_id.as_bytes()),
    };
    write_upstream_request(out, req, peer, req.body, &fwd);
}

/// The balancing key of a request for the hashing policies; `None` for the others, or
/// when the key (header, cookie) is absent, which makes the balancer use round robin.
fn request_hash(
    balance: Balance,
    key: Option<&HashKey>,
    req: &RequestView<'_>,
    peer: &Peer,
) -> Option<u64> {
    let key = match (balance, key) {
        (Balance::IpHash, _) | (_, Some(HashKey::RemoteAddr)) => peer.ip(),
        (_, Some(HashKey::Uri)) => req.path.as_bytes(),
        (_, Some(HashKey::Header(name))) => req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)?,
        (_, Some(HashKey::Cookie(name))) => req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = crate::http::trim(pair);
                let eq = pair.iter().position(|&b| b == b'=')?;
                (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
            })?,
        _ => return None,
    };
    Some(hash_bytes(key))
}

/// The group a routed head goes to.
pub(super) fn upstream_of(gen: &Generation, head: &Head) -> Option<UpstreamId> {
    head.route.map(|r| gen.snap().router.route(r).upstream)
}
