//! `[cache]` and a route's `cache`: the response cache's settings, validated.
//!
//! The process-wide table bounds memory and sets defaults; a route turns caching on
//! (`cache = true`) or overrides the defaults for itself (`cache = { .. }`).

use super::raw::{RawCache, RawRouteCache};
use super::{ConfigError, Validator};
use std::time::Duration;
use toml::Spanned;

/// `[cache]`: process-wide settings (defaults when the table is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Every cached head and body in the process, together.
    pub max_bytes: usize,
    /// Larger responses stream through uncached, never buffered (default: 8 MiB, or a
    /// tenth of `max_bytes` when that is less).
    pub max_object_bytes: usize,
    /// Freshness for responses that carry none, when non-zero.
    pub default_ttl: Duration,
    /// What a request's cache key is made of.
    pub key: Vec<KeyPart>,
    /// How long a stale entry may be served while it is refreshed in the background,
    /// when the response does not say (`stale-while-revalidate`).
    pub stale_while_revalidate: Duration,
    /// How long a stale entry may be served when the upstream fails, when the response
    /// does not say (`stale-if-error`).
    pub stale_if_error: Duration,
    /// How long a request waits for another request's fetch of the same key before it
    /// goes upstream itself.
    pub lock_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 << 20,
            max_object_bytes: 8 << 20,
            default_ttl: Duration::ZERO,
            key: DEFAULT_KEY.to_vec(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// The key nginx users know: method, host, path and query.
const DEFAULT_KEY: [KeyPart; 4] = [
    KeyPart::Method,
    KeyPart::Host,
    KeyPart::Path,
    KeyPart::Query,
];

/// One part of a cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The method (HEAD counts as GET: a HEAD is answered from a GET's entry).
    Method,
    /// The host, lower-cased, without its port.
    Host,
    /// The normalized path.
    Path,
    /// The query string.
    Query,
    /// A request header's value (name lower-cased).
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

impl KeyPart {
    /// The config spelling: `method`, `header:accept-language`.
    pub fn text(&self) -> String {
        match self {
            KeyPart::Method => "method".into(),
            KeyPart::Host => "host".into(),
            KeyPart::Path => "path".into(),
            KeyPart::Query => "query".into(),
            KeyPart::Header(h) => format!("header:{h}"),
            KeyPart::Cookie(c) => format!("cookie:{c}"),
        }
    }
}

/// A route's cache settings, with `[cache]` defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness for responses that carry none, when non-zero.
    pub default_ttl: Duration,
    /// What the key is made of.
    pub key: Vec<KeyPart>,
    /// Responses with `Set-Cookie` are stored (without the cookie).
    pub allow_set_cookie: bool,
}

impl RouteCache {
    /// The key carries the credentials: responses to requests with `Authorization`
    /// may be stored, each under its own credentials.
    pub fn keys_authorization(&self) -> bool {
        self.key
            .iter()
            .any(|p| matches!(p, KeyPart::Header(h) if h == "authorization"))
    }
}

impl Validator<'_> {
    /// `[cache]`.
    pub(super) fn cache(&self, raw: Option<Spanned<RawCache>>) -> Result<CacheConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(CacheConfig::default());
        };
        let raw = raw.into_inner();
        let max_bytes = raw.max_bytes.get_ref().0;
        if !(1 << 20..=1 << 40).contains(&max_bytes) {
            return self.err(
                raw.max_bytes.span(),
                "cache.max_bytes".into(),
                "must be between 1MiB and 1TiB".into(),
            );
        }
        let max_object = match &raw.max_object_bytes {
            // An object over a tenth of the cache would mostly evict others to no use.
            None => (8 << 20).min(max_bytes / 10),
            Some(m) if m.get_ref().0 == 0 || m.get_ref().0 > max_bytes => {
                return self.err(
                    m.span(),
                    "cache.max_object_bytes".into(),
                    "must be between 1B and cache.max_bytes".into(),
                );
            }
            Some(m) => m.get_ref().0,
        };
        let key = match &raw.key {
            None => DEFAULT_KEY.to_vec(),
            Some(k) => {
                key_parts(k.get_ref()).or_else(|m| self.err(k.span(), "cache.key".into(), m))?
            }
        };
        let defaults = CacheConfig::default();
        Ok(CacheConfig {
            max_bytes: max_bytes as usize,
            max_object_bytes: max_object as usize,
            default_ttl: raw.default_ttl.map_or(defaults.default_ttl, |d| d.0),
            key,
            stale_while_revalidate: raw
                .stale_while_revalidate
                .map_or(defaults.stale_while_revalidate, |d| d.0),
            stale_if_error: raw.stale_if_error.map_or(defaults.stale_if_error, |d| d.0),
            lock_timeout: raw.lock_timeout.map_or(defaults.lock_timeout, |d| d.0),
        })
    }

    /// Route `key`'s `cache`, `None` when caching is off for it.
    pub(super) fn route_cache(
        &self,
        raw: Option<Spanned<RawRouteCache>>,
        key: &str,
        global: &CacheConfig,
    ) -> Result<Option<RouteCache>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let inherited = RouteCache {
            default_ttl: global.default_ttl,
            key: global.key.clone(),
            allow_set_cookie: false,
        };
        match raw.into_inner() {
            RawRouteCache::On(false) => Ok(None),
            RawRouteCache::On(true) => Ok(Some(inherited)),
            RawRouteCache::Table(t) => Ok(Some(RouteCache {
                default_ttl: t.default_ttl.map_or(inherited.default_ttl, |d| d.0),
                key: match &t.key {
                    None => inherited.key,
                    Some(k) => key_parts(k).or_else(|m| self.err(span, format!("{key}.key"), m))?,
                },
                allow_set_cookie: t.allow_set_cookie,
            })),
        }
    }
}

/// Validates a key list; it must name the path, or every URL would share one entry.
fn key_parts(items: &[String]) -> Result<Vec<KeyPart>, String> {
    let mut parts = Vec::new();
    for item in items {
        let part = match item.as_str() {
            "method" => KeyPart::Method,
            "host" => KeyPart::Host,
            "path" => KeyPart::Path,
            "query" => KeyPart::Query,
            other => match other.split_once(':') {
                Some(("header", name)) if is_token(name) => {
                    KeyPart::Header(name.to_ascii_lowercase())
                }
                Some(("cookie", name)) if is_token(name) => KeyPart::Cookie(name.to_string()),
                _ => {
                    return Err(format!(
                        "`{other}` is not a key part (use method, host, path, query, \
                         header:NAME or cookie:NAME)"
                    ))
                }
            },
        };
        if parts.contains(&part) {
            return Err(format!("`{item}` is listed twice"));
        }
        parts.push(part);
    }
    if !parts.contains(&KeyPart::Path) {
        return Err("must include \"path\" (or every URL would share one entry)".into());
    }
    Ok(parts)
}

/// An HTTP token (RFC 9110 §5.6.2): header and cookie names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[upstreams.web]\nservers = [\"127.0.0.1:1\"]\n";

    fn parse(extra: &str, route: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{BASE}{extra}\n[[routes]]\nupstream = \"web\"\n{route}\n"),
            "t.toml",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_route_inherits_the_global_settings_or_overrides_them() {
        let c = parse(
            "[cache]\nmax_bytes = \"64MiB\"\ndefault_ttl = \"30s\"\nkey = [\"host\", \"path\", \"header:Accept-Language\"]\n",
            "cache = true",
        )
        .unwrap();
        assert_eq!(c.cache.max_bytes, 64 << 20);
        let rc = c.routes[0].cache.as_ref().unwrap();
        assert_eq!(rc.default_ttl.as_secs(), 30);
        assert_eq!(rc.key[2], super::KeyPart::Header("accept-language".into()));
        let c = parse(
            "",
            "cache = { default_ttl = \"5s\", key = [\"path\", \"header:authorization\"], allow_set_cookie = true }",
        )
        .unwrap();
        let rc = c.routes[0].cache.as_ref().unwrap();
        assert_eq!(rc.default_ttl.as_secs(), 5);
        assert!(rc.allow_set_cookie && rc.keys_authorization());
        assert_eq!(c.cache.max_bytes, 256 << 20, "defaults without [cache]");
        assert!(parse("", "cache = false").unwrap().routes[0]
            .cache
            .is_none());
    }

    #[test]
    fn bad_cache_settings_name_the_key_and_line() {
        let e = parse("[cache]\nkey = [\"host\"]\n", "cache = true").unwrap_err();
        assert!(
            e.contains("t.toml:4") && e.contains("cache.key") && e.contains("path"),
            "{e}"
        );
        let e = parse("[cache]\nkey = [\"path\", \"header:\"]\n", "").unwrap_err();
        assert!(e.contains("cache.key") && e.contains("header:"), "{e}");
        let e = parse("[cache]\nmax_object_bytes = \"1GiB\"\n", "").unwrap_err();
        assert!(e.contains("cache.max_object_bytes"), "{e}");
        let e = parse("[cache]\nmax_bytes = 10\n", "").unwrap_err();
        assert!(e.contains("cache.max_bytes"), "{e}");
        let e = parse("", "cache = { key = [\"path\", \"path\"] }").unwrap_err();
        assert!(
            e.contains("routes[0].cache.key") && e.contains("twice"),
            "{e}"
        );
        let e = parse("[cache]\ndefault_ttl = \"soon\"\n", "").unwrap_err();
        assert!(e.contains("cache.default_ttl"), "{e}");
        let e = parse("", "cache = { ttl = \"1s\" }").unwrap_err();
        assert!(e.contains("routes[0].cache") || e.contains("cache"), "{e}");
    }
}
