//! Whether a response may be stored, and what is stored of it (RFC 9111 §3, §4.2.1,
//! §4.3.4): the decision, the stored head, its freshness and validators. The body is
//! added once it has arrived whole (`Plan::finish`).
//!
//! Pure: the response's fields, the request's facts and the time come in as arguments.
//! Runs on the worker that fetched the response, once per miss or refresh.

use super::entry::{EntryId, Freshness, Stored, VaryField};
use super::request;
use crate::http::cache_control::ResponseDirectives;
use crate::http::{date, is_hop_by_hop, trim};
use bytes::Bytes;

/// A route's storing rules, with `[cache]` defaults filled in (seconds and bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Freshness for responses without any (0: such responses are not stored).
    pub default_ttl: u64,
    /// `stale-while-revalidate` when the response gives none.
    pub stale_while_revalidate: u64,
    /// `stale-if-error` when the response gives none.
    pub stale_if_error: u64,
    /// Responses with `Set-Cookie` are stored (without it).
    pub allow_set_cookie: bool,
    /// The key holds `Authorization`: each set of credentials has its own entries.
    pub keys_authorization: bool,
    /// Largest body stored.
    pub max_object_bytes: usize,
}

/// What storing needs to know of the request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The raw request head (validated), for the values of `Vary` headers.
    pub request_head: &'a [u8],
    /// The key, its hash, the host and the target (see `request::Built`).
    pub key: &'a [u8],
    /// The key's hash.
    pub hash: u64,
    /// The host, lower case, no port.
    pub host: &'a str,
    /// `/path?query`.
    pub target: &'a str,
    /// The request carried `Authorization`.
    pub authorization: bool,
    /// When the request was sent (seconds since the epoch).
    pub request_time: u64,
    /// The route's rules.
    pub rules: &'a Rules,
}

/// Statuses stored (RFC 9110 §15.1's heuristically cacheable ones, without 206 and 501).
const STORED_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// A response that will be stored once its body is complete.
#[derive(Debug)]
pub struct Plan {
    status: u16,
    head: Vec<u8>,
    vary: Vec<VaryField>,
    etag: Option<Box<[u8]>>,
    last_modified_raw: Option<Box<[u8]>>,
    last_modified: Option<u64>,
    freshness: Freshness,
    shared_with_auth: bool,
    key: Box<[u8]>,
    hash: u64,
    host: Box<str>,
    target: Box<str>,
    /// Largest body that may be stored.
    pub max_body: usize,
}

impl Plan {
    /// The stored entry, with its id and whole body.
    pub fn finish(self, id: EntryId, body: Bytes) -> Stored {
        Stored {
            id,
            hash: self.hash,
            key: self.key,
            host: self.host,
            target: self.target,
            vary: self.vary.into_boxed_slice(),
            status: self.status,
            head: self.head.into_boxed_slice(),
            body,
            etag: self.etag,
            last_modified: self.last_modified,
            last_modified_raw: self.last_modified_raw,
            freshness: self.freshness,
            shared_with_auth: self.shared_with_auth,
        }
    }
}

/// The response's fields the decision reads.
#[derive(Default)]
struct Seen<'h> {
    date: Option<&'h [u8]>,
    expires: Option<&'h [u8]>,
    age: Option<&'h [u8]>,
    etag: Option<&'h [u8]>,
    last_modified: Option<&'h [u8]>,
    set_cookie: bool,
}

/// Decides whether a response with `status` and `fields` may be stored for the request
/// in `ctx`, received at `now`; `skip` names fields the upstream made hop-by-hop with
/// `Connection`. `reason` is the status line's reason phrase.
pub fn plan<'h>(
    status: u16,
    reason: &str,
    fields: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    skip: &dyn Fn(&str) -> bool,
    ctx: &Context<'_>,
    now: u64,
) -> Option<Plan> {
    if !STORED_STATUSES.contains(&status) {
        return None;
    }
    let named = |n: &'static str| {
        fields
            .clone()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(n))
    };
    let cc = ResponseDirectives::parse(named("cache-control").map(|(_, v)| v));
    let mut seen = Seen::default();
    for (name, value) in fields.clone() {
        let slot = match name.to_ascii_lowercase().as_str() {
            "date" => &mut seen.date,
            "expires" => &mut seen.expires,
            "age" => &mut seen.age,
            "etag" => &mut seen.etag,
            "last-modified" => &mut seen.last_modified,
            "set-cookie" => {
                seen.set_cookie = true;
                continue;
            }
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    let rules = ctx.rules;
    if cc.no_store || cc.private || (seen.set_cookie && !rules.allow_set_cookie) {
        return None;
    }
    let shared_with_auth = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if ctx.authorization && !rules.keys_authorization && !shared_with_auth {
        return None;
    }
    let mut vary = Vec::new();
    for (_, value) in named("vary") {
        for name in crate::http::list_items(value) {
            if name == b"*" {
                return None;
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            if !vary.iter().any(|v: &VaryField| *v.name == *name) {
                let value = request::joined(ctx.request_head, &name);
                vary.push(VaryField {
                    name: name.into(),
                    value,
                });
            }
        }
    }
    let freshness = freshness(&cc, &seen, ctx, now)?;
    let validator = seen.etag.is_some() || seen.last_modified.is_some();
    let stale_windows = freshness.stale_while_revalidate > 0 || freshness.stale_if_error > 0;
    if !validator && (freshness.no_cache || (freshness.lifetime == 0 && !stale_windows)) {
        // It could never be served: nothing to revalidate it with.
        return None;
    }
    Some(Plan {
        status,
        head: stored_head(status, reason, fields, skip, seen.date.is_none(), now),
        vary,
        etag: seen.etag.map(Into::into),
        last_modified: seen.last_modified.and_then(|v| date::parse_at(v, now)),
        last_modified_raw: seen.last_modified.map(Into::into),
        freshness,
        shared_with_auth,
        key: ctx.key.into(),
        hash: ctx.hash,
        host: ctx.host.into(),
        target: ctx.target.into(),
        max_body: rules.max_object_bytes,
    })
}

/// The response's freshness (RFC 9111 §4.2.1, §4.2.3); `None` when it has no freshness
/// of its own and the route gives none.
fn freshness(
    cc: &ResponseDirectives,
    seen: &Seen<'_>,
    ctx: &Context<'_>,
    now: u64,
) -> Option<Freshness> {
    let parse = |v: &[u8]| date::parse_at(v, now);
    let date_value = seen.date.and_then(parse).unwrap_or(now);
    let lifetime = match (cc.s_maxage.or(cc.max_age), seen.expires) {
        (Some(secs), _) => secs,
        // An invalid Expires (such as `0`) means already expired.
        (None, Some(e)) => parse(e).map_or(0, |at| at.saturating_sub(date_value)),
        (None, None) if ctx.rules.default_ttl > 0 => ctx.rules.default_ttl,
        (None, None) if cc.no_cache => 0,
        (None, None) => return None,
    };
    let age_value = seen
        .age
        .and_then(|a| std::str::from_utf8(trim(a)).ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let apparent_age = now.saturating_sub(date_value);
    let response_delay = now.saturating_sub(ctx.request_time);
    let corrected_age = age_value.saturating_add(response_delay);
    let rules = ctx.rules;
    Some(Freshness {
        response_time: now,
        initial_age: apparent_age.max(corrected_age),
        lifetime,
        stale_while_revalidate: cc
            .stale_while_revalidate
            .unwrap_or(rules.stale_while_revalidate),
        stale_if_error: cc.stale_if_error.unwrap_or(rules.stale_if_error),
        must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
        no_cache: cc.no_cache,
    })
}

/// The head as stored: the status line and the end-to-end fields, without framing,
/// `Age` (recomputed per response), cookies and `Connection`-named fields, plus a
/// `Date` when the upstream sent none (RFC 9110 §6.6.1).
fn stored_head<'h>(
    status: u16,
    reason: &str,
    fields: impl Iterator<Item = (&'h str, &'h [u8])>,
    skip: &dyn Fn(&str) -> bool,
    add_date: bool,
    now: u64,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    crate::http::rewrite::push_u64(&mut head, u64::from(status));
    head.push(b' ');
    head.extend_from_slice(reason.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        if is_hop_by_hop(name)
            || skip(name)
            || name.eq_ignore_ascii_case("age")
            || name.eq_ignore_ascii_case("set-cookie")
        {
            continue;
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    if add_date {
        head.extend_from_slice(b"Date: ");
        head.extend_from_slice(&date::format(now));
        head.extend_from_slice(b"\r\n");
    }
    head
}

/// Fields a 304 does not update in a stored response (RFC 9111 §3.2: framing and the
/// representation the stored body is in).
fn kept_on_refresh(name: &str) -> bool {
    [
        "content-length",
        "content-encoding",
        "content-type",
        "content-range",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// The entry a 304 turns `old` into: its fields updated by the 304's (RFC 9111 §4.3.4),
/// its freshness recomputed, the same body; `None` when the updated response may no
/// longer be stored.
pub fn refresh<'h>(
    old: &'h Stored,
    fields_304: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    skip: &dyn Fn(&str) -> bool,
    ctx: &Context<'_>,
    now: u64,
    id: EntryId,
) -> Option<Stored> {
    let names = fields_304.clone();
    // `Date` always goes: the 304's, or (without one) the time it arrived, which
    // `plan` adds (RFC 9110 §6.6.1); the old one would age the refreshed entry.
    let updated = move |name: &str| {
        name.eq_ignore_ascii_case("date")
            || (!kept_on_refresh(name) && names.clone().any(|(n, _)| n.eq_ignore_ascii_case(name)))
    };
    let kept = old.fields().filter(move |(n, _)| !updated(n));
    let fresh = fields_304.filter(|(n, _)| !kept_on_refresh(n));
    let merged = kept.chain(fresh);
    let reason = status_reason(&old.head);
    // The variant stays the one stored: the 304 answered the same request.
    let ctx = Context {
        key: &old.key,
        hash: old.hash,
        host: &old.host,
        target: &old.target,
        ..*ctx
    };
    let mut p = plan(old.status, reason, merged, skip, &ctx, now)?;
    p.vary = old.vary.to_vec();
    Some(p.finish(id, old.body.clone()))
}

/// The reason phrase of a stored status line.
fn status_reason(head: &[u8]) -> &str {
    let line = head.split(|&b| b == b'\r').next().unwrap_or(b"");
    let reason = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"");
    std::str::from_utf8(reason).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        default_ttl: 0,
        stale_while_revalidate: 0,
        stale_if_error: 0,
        allow_set_cookie: false,
        keys_authorization: false,
        max_object_bytes: 1 << 20,
    };
    const NOW: u64 = 1_000_000;

    fn ctx<'a>(rules: &'a Rules, head: &'a [u8], authorization: bool) -> Context<'a> {
        Context {
            request_head: head,
            key: b"k",
            hash: 7,
            host: "h",
            target: "/a",
            authorization,
            request_time: NOW - 1,
            rules,
        }
    }

    fn try_plan(status: u16, fields: &[(&str, &str)], ctx: &Context<'_>) -> Option<Stored> {
        let it = fields.iter().map(|(n, v)| (*n, v.as_bytes()));
        plan(status, "OK", it, &|_| false, ctx, NOW).map(|p| p.finish(1, Bytes::from_static(b"x")))
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n";

    #[test]
    fn explicit_freshness_is_s_maxage_then_max_age_then_expires() {
        let c = ctx(&RULES, GET, false);
        let s = try_plan(200, &[("Cache-Control", "max-age=60, s-maxage=30")], &c).unwrap();
        assert_eq!(s.freshness.lifetime, 30);
        assert!(
            s.freshness.must_revalidate,
            "s-maxage implies proxy-revalidate"
        );
        let s = try_plan(200, &[("Cache-Control", "max-age=60")], &c).unwrap();
        assert_eq!(s.freshness.lifetime, 60);
        let date = date::format(NOW - 10);
        let expires = date::format(NOW + 50);
        let d = std::str::from_utf8(&date).unwrap();
        let e = std::str::from_utf8(&expires).unwrap();
        let s = try_plan(200, &[("Date", d), ("Expires", e), ("ETag", "\"v\"")], &c).unwrap();
        assert_eq!(s.freshness.lifetime, 60);
        assert_eq!(s.freshness.age(NOW), 10, "apparent age from Date");
        let s = try_plan(200, &[("Expires", "0"), ("ETag", "\"v\"")], &c).unwrap();
        assert_eq!(s.freshness.lifetime, 0, "an invalid Expires is in the past");
        assert!(try_plan(200, &[("Content-Type", "text/plain")], &c).is_none());
        let ttl = Rules {
            default_ttl: 5,
            ..RULES
        };
        let s = try_plan(200, &[], &ctx(&ttl, GET, false)).unwrap();
        assert_eq!(
            s.freshness.lifetime, 5,
            "the route's TTL only without any freshness"
        );
    }

    #[test]
    fn private_no_store_cookies_and_credentials_are_not_stored() {
        let c = ctx(&RULES, GET, false);
        let ok = ("Cache-Control", "max-age=60");
        assert!(try_plan(200, &[ok, ("Cache-Control", "private")], &c).is_none());
        assert!(try_plan(200, &[("Cache-Control", "no-store, max-age=60")], &c).is_none());
        assert!(try_plan(200, &[ok, ("Set-Cookie", "a=1")], &c).is_none());
        assert!(try_plan(206, &[ok], &c).is_none());
        assert!(try_plan(302, &[ok], &c).is_none());
        assert!(try_plan(404, &[ok], &c).is_some());
        let cookies = Rules {
            allow_set_cookie: true,
            ..RULES
        };
        let s = try_plan(
            200,
            &[ok, ("Set-Cookie", "a=1")],
            &ctx(&cookies, GET, false),
        )
        .unwrap();
        assert!(!s
            .head
            .windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"set-cookie")));
        let auth = ctx(&RULES, GET, true);
        assert!(try_plan(200, &[ok], &auth).is_none());
        assert!(try_plan(200, &[("Cache-Control", "public, max-age=60")], &auth).is_some());
        assert!(try_plan(200, &[("Cache-Control", "s-maxage=60")], &auth).is_some());
        let keyed = Rules {
            keys_authorization: true,
            ..RULES
        };
        assert!(try_plan(200, &[ok], &ctx(&keyed, GET, true)).is_some());
    }

    #[test]
    fn vary_records_the_request_values_and_vary_star_is_not_stored() {
        let c = ctx(&RULES, GET, false);
        let ok = ("Cache-Control", "max-age=60");
        let s = try_plan(200, &[ok, ("Vary", "Accept-Encoding, X-Lang")], &c).unwrap();
        assert_eq!(&*s.vary[0].name, "accept-encoding");
        assert_eq!(s.vary[0].value.as_deref(), Some(&b"gzip"[..]));
        assert_eq!(s.vary[1].value, None);
        assert!(try_plan(200, &[ok, ("Vary", "*")], &c).is_none());
    }

    #[test]
    fn the_stored_head_drops_hop_by_hop_fields_and_age_and_gets_a_date() {
        let c = ctx(&RULES, GET, false);
        let fields = [
            ("Cache-Control", "max-age=60"),
            ("Connection", "X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Age", "5"),
            ("Content-Type", "text/plain"),
        ];
        let it = fields.iter().map(|(n, v)| (*n, v.as_bytes()));
        let skip = |n: &str| n.eq_ignore_ascii_case("x-hop");
        let s = plan(200, "OK", it, &skip, &c, NOW)
            .unwrap()
            .finish(1, Bytes::new());
        let head = String::from_utf8(s.head.to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain\r\n"), "{head}");
        assert!(head.contains("Date: "), "{head}");
        for gone in ["Connection", "X-Hop", "Transfer-Encoding", "Age:"] {
            assert!(!head.contains(gone), "{gone} in {head}");
        }
        assert_eq!(s.freshness.initial_age, 6, "Age plus the response delay");
    }

    #[test]
    fn responses_that_could_never_be_served_are_not_stored() {
        let c = ctx(&RULES, GET, false);
        assert!(try_plan(200, &[("Cache-Control", "max-age=0")], &c).is_none());
        assert!(try_plan(
            200,
            &[("Cache-Control", "max-age=0"), ("ETag", "\"a\"")],
            &c
        )
        .is_some());
        assert!(try_plan(200, &[("Cache-Control", "no-cache, max-age=60")], &c).is_none());
        let s = try_plan(200, &[("Cache-Control", "no-cache"), ("ETag", "\"a\"")], &c).unwrap();
        assert!(s.freshness.no_cache);
        let s = try_plan(
            200,
            &[("Cache-Control", "max-age=0, stale-if-error=60")],
            &c,
        )
        .unwrap();
        assert_eq!(s.freshness.stale_if_error, 60);
    }

    #[test]
    fn a_304_updates_the_stored_fields_and_freshness_and_keeps_the_body() {
        let c = ctx(&RULES, GET, false);
        let old = try_plan(
            200,
            &[
                ("Cache-Control", "max-age=1"),
                ("ETag", "\"v1\""),
                ("Content-Type", "text/plain"),
                ("X-Old", "kept"),
            ],
            &c,
        )
        .unwrap();
        let new_fields = [
            ("Cache-Control", "max-age=100"),
            ("ETag", "\"v1\""),
            ("Content-Type", "text/html"),
        ];
        let it = new_fields.iter().map(|(n, v)| (*n, v.as_bytes()));
        let revalidation = Context {
            request_time: NOW + 49,
            ..c
        };
        let s = refresh(&old, it, &|_| false, &revalidation, NOW + 50, 2).unwrap();
        assert_eq!(s.id, 2);
        assert_eq!(s.freshness.lifetime, 100);
        assert_eq!(s.body, old.body);
        let head = String::from_utf8(s.head.to_vec()).unwrap();
        assert!(
            head.contains("X-Old: kept") && head.contains("max-age=100"),
            "{head}"
        );
        assert!(!head.contains("max-age=1\r"), "{head}");
        assert!(
            head.contains("text/plain") && !head.contains("text/html"),
            "{head}"
        );
        assert_eq!(head.matches("ETag").count(), 1, "{head}");
        assert_eq!(head.matches("Date: ").count(), 1, "{head}");
        assert_eq!(s.freshness.age(NOW + 50), 1, "aged from the 304's arrival");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    }
}
