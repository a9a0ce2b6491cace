//! Reading a request head and preparing it: parse (zero-copy, out of the connection
//! buffer), normalize the path, route, and write the head the upstream will get into
//! `out`. What later steps need is kept in a small [`Head`] after the buffer borrow ends.

use super::{gate, Conn};
use crate::buf::Fill;
use crate::config::{Balance, HashKey, NamePart, PathMatch, Route, Target, UpstreamId, Var};
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
    /// `metrics::method_index` of the method.
    pub method: u8,
    pub expect_continue: bool,
    pub is_head: bool,
    /// The matched route's index and its group (in the request's generation).
    pub route: Option<(usize, UpstreamId)>,
    /// The group name a route took from the path, when no group has it (a 502).
    pub missing: Option<Box<str>>,
    /// The request's key for `ip_hash` / `consistent_hash`, when its group uses one.
    pub hash: Option<u64>,
    /// The method is in the group's `idempotent_methods`: safe to send twice.
    pub idempotent: bool,
    /// `$request_id`, when the config uses it.
    pub request_id: RequestId,
    /// `$host` for response header edits, kept only when they use it.
    pub resp_host: Option<Box<str>>,
    /// Where the access log fields in the connection's scratch split (`access::begin`).
    pub log_split: usize,
    /// The cache's view of the request, when its route caches (its key is in the
    /// connection's key scratch).
    pub cache: Option<super::cached::CacheReq>,
    /// Answer 308 to the `https://` URL in `out` (a `redirect_https` listener).
    pub redirect: bool,
    /// The most body bytes this request may send (`max_body_bytes`).
    pub max_body: u64,
    /// The route (by index) answers itself (`respond`, `redirect`; a redirect's
    /// `Location` is in `out`).
    pub local: Option<usize>,
    /// The request is refused before going anywhere: `Forbidden` (allow / deny) or
    /// `TooManyRequests` (the route's `limit`), with the route that refused it (none:
    /// `[server]`'s lists).
    pub refusal: Option<(ProxyError, Option<usize>)>,
    /// The request asks to switch to this protocol (lowercase, without a version), one
    /// the config tunnels: it is forwarded with its Upgrade headers, and a 101 naming
    /// the same protocol turns the connection into a tunnel.
    pub upgrade: Option<Box<str>>,
}

impl Head {
    /// A head for `req` before routing: nothing decided yet.
    fn new(p: &Prep<'_>, req: &Request<'_, '_>) -> Head {
        Head {
            len: req.head_len,
            body: req.body,
            // A draining worker answers `Connection: close`, then closes.
            keep_alive: req.keep_alive && !p.shard.draining(),
            version: req.version,
            method: crate::metrics::method_index(req.method),
            expect_continue: req.expect_continue,
            is_head: req.is_head(),
            route: None,
            missing: None,
            hash: None,
            idempotent: false,
            request_id: RequestId::NONE,
            resp_host: None,
            log_split: 0,
            cache: None,
            redirect: p.redirect,
            upgrade: None,
            max_body: p.gen.snap().server.max_body_bytes,
            local: None,
            refusal: None,
        }
    }
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
    let snap = gen.snap();
    let prep = Prep {
        shard: c.shard,
        gen,
        peer: c.peer,
        scheme: c.scheme.as_str(),
        // Looked up only when some listener redirects: a scan of the listeners.
        redirect: snap.server.redirect_https.is_some()
            && snap
                .listener(c.facts.listener().addr)
                .is_some_and(|r| r.redirect_https),
        ip: c.facts.peer.ip(),
    };
    let mut deadline: Option<Instant> = None;
    loop {
        if !c.cbuf.is_empty() {
            let scratch = Scratch {
                out: &mut *c.out,
                log: &mut *c.log,
                key: &mut *c.key,
            };
            if let Some(head) = prepare(&prep, &limits, c.cbuf.data(), scratch)? {
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
pub(super) struct Prep<'a> {
    pub shard: &'a Shard,
    pub gen: &'a Generation,
    pub peer: &'a Peer,
    /// `http` or `https`, from the connection.
    pub scheme: &'static str,
    /// The connection came in on a `redirect_https` listener.
    pub redirect: bool,
    /// The client's address, for `allow` / `deny`.
    pub ip: std::net::IpAddr,
}

/// The connection's scratch buffers a head is prepared into.
struct Scratch<'a> {
    /// The upstream request head.
    out: &'a mut Vec<u8>,
    /// The access log's fields.
    log: &'a mut Vec<u8>,
    /// The cache key, host and target.
    key: &'a mut Vec<u8>,
}

/// Parses the head in `data` (synchronously, borrowing it), routes it, and writes the
/// upstream request head into `out`. `Ok(None)`: incomplete, read more.
fn prepare(
    p: &Prep<'_>,
    limits: &Limits,
    data: &[u8],
    scratch: Scratch<'_>,
) -> Result<Option<Head>, ProxyError> {
    let Scratch { out, log, key } = scratch;
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let Some(req) = request::parse(data, &mut slots, limits)? else {
        return Ok(None);
    };
    // Allocates only for the rare path that needs normalizing.
    let mut normalized = Vec::new();
    let path = normalized_path(req.path, &mut normalized)?;
    let view = RequestView {
        method: req.method,
        host: req.host,
        path,
        query: req.query.strip_prefix('?').unwrap_or(""),
        headers: req.headers,
    };
    let mut head = Head::new(p, &req);
    out.clear();
    let snap = p.gen.snap();
    if gate::before_route(p, &req, &mut head, out) {
        log_begin(p, &req, &mut head, "", log);
        return Ok(Some(head));
    }
    let Some(index) = snap.router.find(&view) else {
        log_begin(p, &req, &mut head, "", log);
        return Ok(Some(head));
    };
    let route = snap.router.route(index);
    if gate::at_route(p, &req, &view, (index, route), &mut head, out) {
        log_begin(p, &req, &mut head, &route.label, log);
        return Ok(Some(head));
    }
    let (id, rest) = match target(p.gen, index, route, path) {
        Ok(found) => found,
        Err(name) => {
            head.missing = Some(name);
            log_begin(p, &req, &mut head, &route.label, log);
            return Ok(Some(head));
        }
    };
    head.max_body = route.max_body_bytes.unwrap_or(head.max_body);
    if let Framing::Length(n) = head.body {
        if n > head.max_body {
            // Answered before a byte of it is read or forwarded; the connection closes.
            return Err(ProxyError::PayloadTooLarge);
        }
    }
    head.route = Some((index, id));
    let group = &p.gen.group(id).upstream;
    head.hash = request_hash(group.balance, group.hash_key.as_ref(), &view, p.peer);
    head.idempotent = group.idempotent_methods.iter().any(|m| m == req.method);
    head.upgrade = gate::upgrade(&snap.server.upgrade_protocols, &req);
    match &route.cache {
        // A tunnel is never a cache entry.
        Some(rc) if head.upgrade.is_none() => {
            head.cache = Some(super::cached::CacheReq::new(rc, &req, &view, key));
        }
        _ => {}
    }
    forward(p, route, &req, (path, rest), out, &mut head);
    log_begin(p, &req, &mut head, &route.label, log);
    Ok(Some(head))
}

/// The path routes see: `raw` itself, or its normalized form written into `scratch`.
fn normalized_path<'a>(raw: &'a str, scratch: &'a mut Vec<u8>) -> Result<&'a str, ProxyError> {
    match path::normalize(raw, scratch) {
        _ if raw == "*" => Ok(raw),
        Ok(false) => Ok(raw),
        Ok(true) => {
            std::str::from_utf8(scratch).map_err(|_| ProxyError::BadRequest("invalid path"))
        }
        Err(_) => Err(ProxyError::BadRequest("malformed percent-encoding in path")),
    }
}

/// Copies what the access log needs of the head into `log`, when the log is on.
fn log_begin(p: &Prep<'_>, req: &Request<'_, '_>, head: &mut Head, route: &str, log: &mut Vec<u8>) {
    let Some(format) = p.gen.snap().access else {
        return;
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map_or(&b""[..], |h| h.value)
    };
    let (time, len) = p.shard.log_time(format);
    let fields = crate::access::Request {
        client: p.peer.ip(),
        time: &time[..len],
        method: req.method,
        path: req.path,
        query: req.query,
        version: match req.version {
            Version::Http11 => "HTTP/1.1",
            Version::Http10 => "HTTP/1.0",
        },
        referer: header("referer"),
        user_agent: header("user-agent"),
        request_id: head.request_id.as_bytes(),
        route,
    };
    head.log_split = crate::access::begin(log, format, &fields);
}

/// Longest group name a path can give (the admin API allows 128 bytes).
const MAX_GROUP_NAME: usize = 128;

/// The group route `index` sends `path` to, and what of the path follows the matched
/// prefix (or regex match); `Err(name)`: the group named from the path does not exist.
fn target<'p>(
    gen: &Generation,
    index: usize,
    route: &Route,
    path: &'p str,
) -> Result<(UpstreamId, &'p str), Box<str>> {
    let (template, re) = match (&route.upstream, &route.path) {
        (Target::Group(id), PathMatch::Prefix(p)) if p != "/" => {
            return Ok((*id, &path[p.len()..]))
        }
        (Target::Group(id), PathMatch::Regex(re))
            if route.strip_prefix || route.rewrite_prefix.is_some() =>
        {
            let end = re.find(path).map_or(0, |m| m.end());
            return Ok((*id, &path[end..]));
        }
        (Target::Group(id), _) => return Ok((*id, path)),
        (Target::FromPath(t), PathMatch::Regex(re)) => (t, re),
        // Answered before a group is looked for (`prepare`).
        (Target::Local, _) => return Err(route.label.clone().into()),
        // Validation gives a path-named group a regex; a route without one matches nothing.
        (Target::FromPath(t), _) => return Err(t.text.clone().into()),
    };
    let Some(mut locs) = gen.captures(index) else {
        return Err(template.text.clone().into());
    };
    let Some(whole) = re.captures_read(&mut locs, path) else {
        return Err(template.text.clone().into());
    };
    // Built on the stack: a path-named group costs no allocation when it exists.
    let mut name = [0u8; MAX_GROUP_NAME];
    let mut len = 0;
    for part in &template.parts {
        let piece = match part {
            NamePart::Lit(l) => l.as_str(),
            NamePart::Capture(i) => locs.get(*i).map_or("", |(s, e)| &path[s..e]),
        };
        let Some(slot) = name.get_mut(len..len + piece.len()) else {
            return Err(String::from_utf8_lossy(&name[..len]).into());
        };
        slot.copy_from_slice(piece.as_bytes());
        len += piece.len();
    }
    // Captures of a `&str` at match boundaries are UTF-8, and so is the literal text.
    let name = std::str::from_utf8(&name[..len]).unwrap_or("");
    match gen.snap().group_id(name) {
        Some(id) => Ok((id, &path[whole.end()..])),
        None => Err(name.into()),
    }
}

/// Writes the upstream head for a routed request into `out`: the rewritten target, the
/// request id, and the header edits of `[server]` and the route.
/// `(path, rest)`: the normalized path, and what follows the route's matched prefix.
fn forward(
    p: &Prep<'_>,
    route: &Route,
    req: &Request<'_, '_>,
    (path, rest): (&str, &str),
    out: &mut Vec<u8>,
    head: &mut Head,
) {
    let global = &p.gen.snap().server;
    let target = rewritten(route, path, rest);
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
        strip_conditionals: head.cache.is_some_and(|c| c.lookup_method()),
        upgrade: req.upgrade.filter(|_| head.upgrade.is_some()),
    };
    write_upstream_request(out, req, peer, req.body, &fwd);
}

/// The path the upstream gets, in pieces: unchanged, or with the matched prefix (or
/// regex match) stripped or replaced, always starting with `/`.
fn rewritten<'a>(route: &'a Route, path: &'a str, rest: &'a str) -> [&'a [u8]; 3] {
    let (r, slash) = (rest.as_bytes(), rest.starts_with('/'));
    match (&route.rewrite_prefix, route.strip_prefix) {
        (Some(new), _) if new.ends_with('/') && slash => [new.as_bytes(), &r[1..], b""],
        (Some(new), _) if new.ends_with('/') || slash || r.is_empty() => [new.as_bytes(), r, b""],
        (Some(new), _) => [new.as_bytes(), b"/", r],
        (None, true) if r.is_empty() => [b"/", b"", b""],
        (None, true) if slash => [r, b"", b""],
        (None, true) => [b"/", r, b""],
        (None, false) => [path.as_bytes(), b"", b""],
    }
}

/// The balancing key of a request for the hashing policies; `None` for the others, or
/// when the key (header, cookie) is absent, which makes the balancer use round robin.
pub(super) fn request_hash(
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

/// The name of the group a head went to (or would have: a name taken from the path
/// that no group has), for error answers.
pub(super) fn group_name<'a>(gen: &'a Generation, head: &'a Head) -> Option<&'a str> {
    match (head.route, &head.missing) {
        (Some((_, id)), _) => Some(gen.group(id).upstream.name.as_str()),
        (None, Some(name)) => Some(name),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn route(conditions: &str) -> Route {
        let c = Config::parse(
            &format!("[upstreams.web]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"web\"\n{conditions}\n"),
            "t",
        )
        .unwrap();
        c.routes[0].clone()
    }

    fn joined(parts: [&[u8]; 3]) -> String {
        parts.iter().map(|p| String::from_utf8_lossy(p)).collect()
    }

    #[test]
    fn prefixes_and_regex_matches_are_stripped_or_replaced_to_a_path() {
        let strip = route("path_prefix = \"/api\"\nstrip_prefix = true");
        assert_eq!(joined(rewritten(&strip, "/api/x", "/x")), "/x");
        assert_eq!(joined(rewritten(&strip, "/api", "")), "/");
        let v2 = route("path_prefix = \"/api\"\nrewrite_prefix = \"/v2\"");
        assert_eq!(joined(rewritten(&v2, "/api/x", "/x")), "/v2/x");
        let v2_slash = route("path_prefix = \"/api\"\nrewrite_prefix = \"/v2/\"");
        assert_eq!(joined(rewritten(&v2_slash, "/api/x", "/x")), "/v2/x");
        // A regex match usually ends with its `/`: what follows has none.
        let re = route("path_regex = \"^/[a-z]+/v[0-9]+/\"\nstrip_prefix = true");
        assert_eq!(joined(rewritten(&re, "/svc/v1/hello", "hello")), "/hello");
        assert_eq!(joined(rewritten(&re, "/svc/v1/", "")), "/");
        let re_v2 = route("path_regex = \"^/[a-z]+/v[0-9]+/\"\nrewrite_prefix = \"/v2\"");
        assert_eq!(
            joined(rewritten(&re_v2, "/svc/v1/hello", "hello")),
            "/v2/hello"
        );
        let plain = route("path_prefix = \"/api\"");
        assert_eq!(joined(rewritten(&plain, "/api/x", "/x")), "/api/x");
    }
}
