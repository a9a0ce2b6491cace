//! A stored response (`Stored`): immutable once built, shared by every worker through an
//! `Arc` (head and body are stored once in the process), and its freshness arithmetic
//! (RFC 9111 §4.2), a pure function of the time passed in.
//!
//! Built on the worker that fetched the response (`cache::plan`), read by every worker,
//! counted and evicted by the control thread.

use crate::http::cache_control::RequestDirectives;
use bytes::Bytes;

/// An entry's id: unique in the process (the worker that stored it, then its count).
pub use super::policy::EntryId;

/// A request header a response varies on, with the value the stored request had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaryField {
    /// Lower-cased header name.
    pub name: Box<str>,
    /// The request's values joined with `, `; `None` when it did not send the header.
    pub value: Option<Box<[u8]>>,
}

/// How a stored response ages and for how long it may be used, in whole seconds since
/// the Unix epoch (RFC 9111 uses seconds too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Freshness {
    /// When the response was received.
    pub response_time: u64,
    /// Its age on arrival (`corrected_initial_age`, RFC 9111 §4.2.3).
    pub initial_age: u64,
    /// How long it is fresh, counted from its age 0 (`freshness_lifetime`).
    pub lifetime: u64,
    /// Seconds past its lifetime it may be served while it is refreshed.
    pub stale_while_revalidate: u64,
    /// Seconds past its lifetime it may be served when the upstream fails.
    pub stale_if_error: u64,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale.
    pub must_revalidate: bool,
    /// `no-cache`: revalidated before every use.
    pub no_cache: bool,
}

/// What a request may do with a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Fresh,
    /// Serve it although it is stale: the request allows that much staleness.
    AcceptedStale,
    /// It is stale (or the request or response wants it checked): revalidate or refetch.
    Stale,
}

impl Freshness {
    /// Its current age (`current_age`, RFC 9111 §4.2.3).
    pub fn age(&self, now: u64) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_sub(self.response_time))
    }

    /// Seconds past its lifetime (0 while fresh).
    pub fn staleness(&self, now: u64) -> u64 {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// Fresh, and may be served without asking the origin.
    pub fn is_fresh(&self, now: u64) -> bool {
        !self.no_cache && self.age(now) < self.lifetime
    }

    /// Stale, but still inside its `stale-while-revalidate` window (the window's
    /// first second starts at staleness 0: a window of 0 never serves stale).
    pub fn within_stale_while_revalidate(&self, now: u64) -> bool {
        self.may_serve_stale() && self.staleness(now) < self.stale_while_revalidate
    }

    /// Stale, but still inside its `stale-if-error` window.
    pub fn within_stale_if_error(&self, now: u64) -> bool {
        self.may_serve_stale() && self.staleness(now) < self.stale_if_error
    }

    fn may_serve_stale(&self) -> bool {
        !self.must_revalidate && !self.no_cache
    }

    /// When it stops being servable without revalidation, stale windows included.
    pub fn servable_until(&self) -> u64 {
        let born = self.response_time.saturating_sub(self.initial_age);
        let stale = if self.may_serve_stale() {
            self.stale_while_revalidate.max(self.stale_if_error)
        } else {
            0
        };
        born.saturating_add(self.lifetime).saturating_add(stale)
    }

    /// What a request with these directives may do with it (RFC 9111 §4.2, §5.2.1).
    pub fn judge(&self, req: &RequestDirectives, now: u64) -> Verdict {
        let age = self.age(now);
        if req.no_cache || self.no_cache || req.max_age.is_some_and(|m| age > m) {
            return Verdict::Stale;
        }
        if req
            .min_fresh
            .is_some_and(|m| self.lifetime < age.saturating_add(m))
        {
            return Verdict::Stale;
        }
        if self.is_fresh(now) {
            return Verdict::Fresh;
        }
        match req.max_stale {
            Some(m) if !self.must_revalidate && self.staleness(now) <= m => Verdict::AcceptedStale,
            _ => Verdict::Stale,
        }
    }
}

/// A stored response. Immutable: a refresh stores a new one (with the same body).
#[derive(Debug)]
pub struct Stored {
    /// Unique in the process.
    pub id: EntryId,
    /// The key's hash (the same on every worker).
    pub hash: u64,
    /// The key.
    pub key: Box<[u8]>,
    /// The request's host (lower case, no port), for purges.
    pub host: Box<str>,
    /// The request's normalized path and query (`/a?b`), for purges.
    pub target: Box<str>,
    /// The request headers the response varies on, with the stored request's values.
    pub vary: Box<[VaryField]>,
    /// The status code.
    pub status: u16,
    /// The status line and the end-to-end header fields, each ending in CRLF; without
    /// framing, `Age`, `Via` and `Connection`, which are written per response.
    pub head: Box<[u8]>,
    /// The body (empty for bodiless statuses).
    pub body: Bytes,
    /// The `ETag` value, as sent.
    pub etag: Option<Box<[u8]>>,
    /// `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<u64>,
    /// The `Last-Modified` value, as sent (for revalidation).
    pub last_modified_raw: Option<Box<[u8]>>,
    /// Its freshness.
    pub freshness: Freshness,
    /// May answer requests with `Authorization` (`public`, `s-maxage` or
    /// `must-revalidate`, RFC 9111 §3.5).
    pub shared_with_auth: bool,
}

/// Bytes counted per entry beyond its data: the struct, its `Arc`, the index slots.
pub const ENTRY_OVERHEAD: usize = 256;

impl Stored {
    /// Bytes it holds, as counted against `cache.max_bytes`.
    pub fn size(&self) -> usize {
        let vary: usize = self
            .vary
            .iter()
            .map(|v| v.name.len() + v.value.as_ref().map_or(0, |v| v.len()) + 40)
            .sum();
        ENTRY_OVERHEAD
            + self.key.len()
            + self.host.len()
            + self.target.len()
            + self.head.len()
            + self.body.len()
            + self.etag.as_ref().map_or(0, |e| e.len())
            + self.last_modified_raw.as_ref().map_or(0, |e| e.len())
            + vary
    }

    /// Stored for the same request variant as `other` (same key, same varying values):
    /// one replaces the other.
    pub fn same_variant(&self, other: &Stored) -> bool {
        self.hash == other.hash && self.key == other.key && self.vary == other.vary
    }

    /// Newer than `other` (of the same variant): every worker keeps the same one.
    pub fn newer_than(&self, other: &Stored) -> bool {
        (self.freshness.response_time, self.id) > (other.freshness.response_time, other.id)
    }

    /// Has a validator: can be revalidated with a conditional request.
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified_raw.is_some()
    }

    /// The stored header fields as (name, value) pairs.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone {
        fields(&self.head)
    }
}

/// The (name, value) pairs of a head stored as a status line and `Name: value\r\n`
/// lines (written by `plan`, so each line has a colon and no bare CR or LF).
pub fn fields(head: &[u8]) -> impl Iterator<Item = (&str, &[u8])> + Clone {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        Some((name, crate::http::trim(&line[colon + 1..])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh_for(lifetime: u64) -> Freshness {
        Freshness {
            response_time: 1000,
            initial_age: 10,
            lifetime,
            ..Freshness::default()
        }
    }

    #[test]
    fn age_counts_from_the_initial_age_and_freshness_ends_at_the_lifetime() {
        let f = fresh_for(60);
        assert_eq!(f.age(1000), 10);
        assert_eq!(f.age(1030), 40);
        assert!(f.is_fresh(1049));
        assert!(!f.is_fresh(1050), "age 60 is not below a 60 s lifetime");
        assert_eq!(f.staleness(1055), 5);
        assert_eq!(f.age(900), 10, "a clock going back does not underflow");
    }

    #[test]
    fn stale_windows_apply_unless_revalidation_is_required() {
        let mut f = fresh_for(60);
        f.stale_while_revalidate = 30;
        f.stale_if_error = 100;
        assert!(f.within_stale_while_revalidate(1079));
        assert!(!f.within_stale_while_revalidate(1080));
        assert!(f.within_stale_if_error(1149));
        assert!(
            !fresh_for(60).within_stale_if_error(1050),
            "no window, no stale"
        );
        assert_eq!(f.servable_until(), 990 + 60 + 100);
        f.must_revalidate = true;
        assert!(!f.within_stale_if_error(1051));
        assert_eq!(f.servable_until(), 1050);
    }

    #[test]
    fn request_directives_can_demand_a_younger_or_accept_an_older_response() {
        let f = fresh_for(60);
        let none = RequestDirectives::default();
        assert_eq!(f.judge(&none, 1020), Verdict::Fresh);
        let max_age_0 = RequestDirectives {
            max_age: Some(0),
            ..none
        };
        assert_eq!(f.judge(&max_age_0, 1020), Verdict::Stale);
        let no_cache = RequestDirectives {
            no_cache: true,
            ..none
        };
        assert_eq!(f.judge(&no_cache, 1000), Verdict::Stale);
        let min_fresh = RequestDirectives {
            min_fresh: Some(30),
            ..none
        };
        assert_eq!(f.judge(&min_fresh, 1020), Verdict::Fresh);
        assert_eq!(f.judge(&min_fresh, 1021), Verdict::Stale);
        let max_stale = RequestDirectives {
            max_stale: Some(10),
            ..none
        };
        assert_eq!(f.judge(&max_stale, 1060), Verdict::AcceptedStale);
        assert_eq!(f.judge(&max_stale, 1061), Verdict::Stale);
        assert_eq!(f.judge(&none, 1050), Verdict::Stale);
        let response_no_cache = Freshness {
            no_cache: true,
            ..f
        };
        assert_eq!(response_no_cache.judge(&none, 1000), Verdict::Stale);
    }

    #[test]
    fn stored_fields_read_back_as_name_value_pairs() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag:  \"x\" \r\n";
        let got: Vec<(&str, &[u8])> = fields(head).collect();
        assert_eq!(
            got,
            [
                ("Content-Type", &b"text/plain"[..]),
                ("ETag", &b"\"x\""[..])
            ]
        );
    }
}
