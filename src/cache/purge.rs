//! Which stored responses a purge removes: one URL (all its variants, whatever the key
//! is made of) or every URL under a path prefix, on one host or any.
//!
//! Built by the admin API from `?key=` / `?prefix=`, and by a worker after an unsafe
//! request succeeds (RFC 9111 §4.4); matched on every worker and on the control thread.

use super::entry::Stored;
use crate::http::path;

/// A purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One URL: `/path?query` on `host` (any host when `None`).
    Url {
        /// Lower case, no port.
        host: Option<String>,
        /// Normalized path and query.
        target: String,
    },
    /// Every URL whose path starts with `prefix`, on `host` (any when `None`).
    Prefix {
        /// Lower case, no port.
        host: Option<String>,
        /// A normalized path prefix.
        prefix: String,
    },
}

impl Purge {
    /// The purge of one URL: `http://host/path?q` or `/path?q`.
    pub fn url(text: &str) -> Result<Purge, String> {
        let (host, rest) = split(text)?;
        let (p, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut target = normalized(p)?;
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            target.push('?');
            target.push_str(q);
        }
        Ok(Purge::Url { host, target })
    }

    /// The purge of a path prefix: `/static/` or `http://host/static/`.
    pub fn prefix(text: &str) -> Result<Purge, String> {
        let (host, rest) = split(text)?;
        if rest.contains('?') {
            return Err(format!("`{text}`: a prefix is a path, without a query"));
        }
        Ok(Purge::Prefix {
            host,
            prefix: normalized(rest)?,
        })
    }

    /// True when it removes `s`.
    pub fn matches(&self, s: &Stored) -> bool {
        let host_ok = |h: &Option<String>| h.as_deref().is_none_or(|h| h == &*s.host);
        match self {
            Purge::Url { host, target } => host_ok(host) && *s.target == **target,
            Purge::Prefix { host, prefix } => {
                let path = s.target.split('?').next().unwrap_or("");
                host_ok(host) && path.starts_with(prefix.as_str())
            }
        }
    }
}

/// Splits an optional `http://host[:port]` (or `https://`) from the path.
fn split(text: &str) -> Result<(Option<String>, &str), String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    let Some(rest) = rest else {
        return match text.starts_with('/') {
            true => Ok((None, text)),
            false => Err(format!("`{text}` is neither a path nor an http(s) URL")),
        };
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = crate::http::strip_port(authority).to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    Ok((Some(host), path))
}

/// The path as the proxy normalizes request paths, so a purge names what was stored.
fn normalized(p: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    match path::normalize(p, &mut buf) {
        Ok(false) => Ok(p.to_string()),
        Ok(true) => String::from_utf8(buf).map_err(|_| format!("`{p}` is not a valid path")),
        Err(_) => Err(format!("`{p}` has malformed percent-encoding")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::index::tests::entry;

    #[test]
    fn a_url_purge_matches_its_target_on_its_host_or_any() {
        let e = entry("/a?x=1", 1, 1, Some("en"));
        assert!(Purge::url("/a?x=1").unwrap().matches(&e));
        assert!(Purge::url("http://Example.com:8080/a?x=1")
            .unwrap()
            .matches(&e));
        assert!(!Purge::url("http://other.com/a?x=1").unwrap().matches(&e));
        assert!(!Purge::url("/a").unwrap().matches(&e));
        assert!(
            Purge::url("/b/../a?x=1").unwrap().matches(&e),
            "normalized like requests"
        );
        assert!(Purge::url("ftp://x/a").is_err());
        assert!(Purge::url("a").is_err());
        assert!(Purge::url("http:///a").is_err());
    }

    #[test]
    fn a_prefix_purge_matches_paths_under_it_whatever_the_query() {
        let e = entry("/static/app.js?v=3", 1, 1, None);
        assert!(Purge::prefix("/static/").unwrap().matches(&e));
        assert!(Purge::prefix("/").unwrap().matches(&e));
        assert!(Purge::prefix("http://example.com/static")
            .unwrap()
            .matches(&e));
        assert!(!Purge::prefix("/img").unwrap().matches(&e));
        assert!(Purge::prefix("/static?x").is_err());
    }
}
