//! `[[routes]]`: validated match conditions, rewrites and header edits per route.
//!
//! Matching itself lives in `crate::route`; this module only turns what was written
//! into typed, checked values (a bad regex or host is reported with its key and line).

use super::raw::{OneOrMany, RawRoute};
use super::HeaderEdits;
use super::{ConfigError, Upstream, UpstreamId, Validator};

/// A `host` condition, lowercased, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `"service2.com.br"`.
    Exact(String),
    /// `"*.example.com"`, stored as `example.com`: any subdomain, not the domain itself.
    Wildcard(String),
}

/// The path condition of a route.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// No path condition.
    Any,
    /// `path_prefix`, segment-aware: `/api` matches `/api` and `/api/x`, not `/apix`.
    /// Stored without a trailing slash (`/` stays `/`).
    Prefix(String),
    /// `path`: exactly this path.
    Exact(String),
    /// `path_regex`: the regex must match somewhere in the path (anchor it with `^...$`).
    Regex(regex::Regex),
}

/// A `headers` / `query` value condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// `"*"`: present with any value.
    Present,
    /// Exactly this value.
    Exact(String),
}

/// Where a route sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The group named in the config.
    Group(UpstreamId),
    /// The group the request's path names: `upstream = "${name}-${version}"` over
    /// the route's `path_regex` named groups (seed 003's `/serviceName/serviceVersion/`).
    /// A group that does not exist (yet) is a 502 naming it.
    FromPath(NameTemplate),
    /// No upstream: the route answers itself (`Route::local`).
    Local,
}

/// A group name built from a path's regex captures, parsed once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    /// As written, for messages and `GET /config`.
    pub text: String,
    /// Literal text and capture-group indices, in order.
    pub parts: Vec<NamePart>,
}

/// One piece of a [`NameTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePart {
    /// Copied as written.
    Lit(String),
    /// The text this capture group of the route's regex matched.
    Capture(usize),
}

/// One `[[routes]]` entry; it matches when every condition holds.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its name in metrics and logs: `name`, or `routes[i]` by position.
    pub label: String,
    /// Host conditions (any of them); empty = any host.
    pub hosts: Vec<HostMatch>,
    /// Path condition.
    pub path: PathMatch,
    /// Allowed methods (exact, upper case); empty = any.
    pub methods: Vec<String>,
    /// Header conditions (lowercase names); all must hold.
    pub headers: Vec<(String, ValueMatch)>,
    /// Query parameter conditions; all must hold.
    pub query: Vec<(String, ValueMatch)>,
    /// Where its requests go.
    pub upstream: Target,
    /// Remove the matched `path_prefix` (or the whole `path_regex` match) before
    /// forwarding.
    pub strip_prefix: bool,
    /// Replace the matched `path_prefix` (or the whole `path_regex` match) with this
    /// before forwarding.
    pub rewrite_prefix: Option<String>,
    /// Edits to the forwarded request's headers (after the global ones).
    pub request_headers: HeaderEdits,
    /// Edits to the response's headers (after the global ones).
    pub response_headers: HeaderEdits,
    /// Response caching for this route, when on.
    pub cache: Option<super::RouteCache>,
    /// Largest request body on this route, over `[server] max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `allow` / `deny` for this route (after `[server]`'s).
    pub access: super::Access,
    /// What the route answers itself (`respond`, `redirect`); `upstream` is then
    /// `Target::Local`.
    pub local: Option<super::LocalAnswer>,
    /// `limit`: a token bucket per key (per worker, the rate split over workers).
    pub limit: Option<super::RateLimit>,
}

impl Validator<'_> {
    /// Validates route number `i` (0-based, in file order).
    pub(super) fn route(
        &self,
        i: usize,
        r: RawRoute,
        upstreams: &[Upstream],
        cache: &super::CacheConfig,
    ) -> Result<Route, ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let anchor = [
            r.upstream.as_ref().map(|u| u.span()),
            r.respond.as_ref().map(|u| u.span()),
            r.redirect.as_ref().map(|u| u.span()),
        ];
        let given = anchor.iter().flatten().count();
        let anchor = anchor.into_iter().flatten().next().unwrap_or(0..0);
        if given != 1 {
            return self.err(
                anchor,
                key("upstream"),
                "needs exactly one of upstream, respond and redirect".into(),
            );
        }
        let local = self.local_answer(&r, &key)?;
        let no_name = String::new();
        let name = r.upstream.as_ref().map_or(&no_name, |u| u.get_ref());
        // A local route names no group; a templated name is resolved per request.
        let fixed = if local.is_some() || name.contains("${") {
            None
        } else {
            let Some(id) = upstreams.iter().position(|u| &u.name == name) else {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                return self.err(
                    anchor.clone(),
                    key("upstream"),
                    format!(
                        "no upstream named `{name}` (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            };
            Some(id)
        };

        let mut hosts = Vec::new();
        if let Some(h) = &r.host {
            let list = match h.get_ref() {
                OneOrMany::One(s) => std::slice::from_ref(s),
                OneOrMany::Many(v) => v.as_slice(),
            };
            if list.is_empty() {
                return self.err(h.span(), key("host"), "needs at least one host".into());
            }
            for text in list {
                match parse_host(text) {
                    Ok(m) => hosts.push(m),
                    Err(msg) => return self.err(h.span(), key("host"), msg),
                }
            }
        }

        let given = [
            r.path_prefix.is_some(),
            r.path.is_some(),
            r.path_regex.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() > 1 {
            return self.err(
                anchor.clone(),
                key("path_prefix"),
                "use only one of path_prefix, path and path_regex".into(),
            );
        }
        let path = if let Some(p) = &r.path_prefix {
            let text = p.get_ref();
            if !text.starts_with('/') {
                return self.err(
                    p.span(),
                    key("path_prefix"),
                    format!("`{text}` must start with `/`"),
                );
            }
            let trimmed = text.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
        } else if let Some(p) = &r.path {
            let text = p.get_ref();
            if !text.starts_with('/') {
                return self.err(
                    p.span(),
                    key("path"),
                    format!("`{text}` must start with `/`"),
                );
            }
            PathMatch::Exact(text.clone())
        } else if let Some(p) = &r.path_regex {
            match regex::Regex::new(p.get_ref()) {
                Ok(re) => PathMatch::Regex(re),
                Err(e) => {
                    let msg = e.to_string().replace('\n', " ");
                    return self.err(p.span(), key("path_regex"), format!("invalid regex: {msg}"));
                }
            }
        } else {
            PathMatch::Any
        };

        let upstream = match (fixed, &path) {
            _ if local.is_some() => Target::Local,
            (Some(id), _) => Target::Group(id),
            (None, PathMatch::Regex(re)) => match name_template(name, re) {
                Ok(t) => Target::FromPath(t),
                Err(m) => return self.err(anchor.clone(), key("upstream"), m),
            },
            (None, _) => {
                return self.err(
                    anchor.clone(),
                    key("upstream"),
                    format!("`{name}` names regex groups: the route needs a path_regex"),
                )
            }
        };

        let prefix_only = |k: &str| -> Result<(), ConfigError> {
            if matches!(path, PathMatch::Prefix(_) | PathMatch::Regex(_)) {
                Ok(())
            } else {
                self.err(
                    anchor.clone(),
                    key(k),
                    "needs a path_prefix or path_regex to strip or rewrite".into(),
                )
            }
        };
        if r.strip_prefix {
            prefix_only("strip_prefix")?;
        }
        if let Some(rp) = &r.rewrite_prefix {
            prefix_only("rewrite_prefix")?;
            if r.strip_prefix {
                return self.err(
                    rp.span(),
                    key("rewrite_prefix"),
                    "use either strip_prefix or rewrite_prefix".into(),
                );
            }
            if !rp.get_ref().starts_with('/') || rp.get_ref().contains(['?', '#', ' ']) {
                return self.err(
                    rp.span(),
                    key("rewrite_prefix"),
                    format!("`{}` must be a path starting with `/`", rp.get_ref()),
                );
            }
        }

        let mut methods = Vec::new();
        if let Some(m) = &r.methods {
            for method in m.get_ref() {
                let ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
                if !ok {
                    return self.err(
                        m.span(),
                        key("methods"),
                        format!("`{method}` is not a method (use upper case, e.g. \"GET\")"),
                    );
                }
                methods.push(method.clone());
            }
        }

        let mut headers = Vec::new();
        if let Some(h) = &r.headers {
            for (name, value) in h.get_ref() {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    return self.err(
                        h.span(),
                        key("headers"),
                        format!("`{name}` is not a header name"),
                    );
                }
                headers.push((name.to_ascii_lowercase(), value_match(value)));
            }
        }
        let mut query = Vec::new();
        if let Some(q) = &r.query {
            for (name, value) in q.get_ref() {
                query.push((name.clone(), value_match(value)));
            }
        }

        let label = match &r.name {
            None => format!("routes[{i}]"),
            Some(n) => {
                let ok = !n.get_ref().is_empty()
                    && n.get_ref().len() <= 64
                    && n.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
                if !ok {
                    return self.err(
                        n.span(),
                        key("name"),
                        format!(
                            "`{}` is not a route name (1-64 of letters, digits, `-_.:/`)",
                            n.get_ref()
                        ),
                    );
                }
                n.get_ref().clone()
            }
        };
        Ok(Route {
            label,
            hosts,
            path,
            methods,
            headers,
            query,
            upstream,
            strip_prefix: r.strip_prefix,
            rewrite_prefix: r.rewrite_prefix.map(|p| p.into_inner()),
            request_headers: self.edits(r.request_headers, &key("request_headers"), false)?,
            response_headers: self.edits(r.response_headers, &key("response_headers"), true)?,
            cache: self.route_cache(r.cache, &key("cache"), cache)?,
            max_body_bytes: r.max_body_bytes.map(|m| m.into_inner().0),
            access: self.access(r.allow.as_ref(), r.deny.as_ref(), &format!("routes[{i}]"))?,
            limit: self.rate_limit(r.limit.as_ref(), &key)?,
            local,
        })
    }
}

/// Parses `svc-${name}-${version}` against `re`'s named groups.
fn name_template(text: &str, re: &regex::Regex) -> Result<NameTemplate, String> {
    let names: Vec<Option<&str>> = re.capture_names().collect();
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(NamePart::Lit(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{text}`: a `${{` without its `}}`"));
        };
        let group = &after[..end];
        let Some(index) = names.iter().position(|n| *n == Some(group)) else {
            let known: Vec<&str> = names.iter().flatten().copied().collect();
            return Err(format!(
                "`${{{group}}}` is not a named group of the path_regex (named: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        parts.push(NamePart::Capture(index));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(NamePart::Lit(rest.to_string()));
    }
    let literal_ok = parts.iter().all(|p| match p {
        NamePart::Lit(l) => l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        NamePart::Capture(_) => true,
    });
    if !literal_ok {
        return Err(format!(
            "`{text}`: outside `${{...}}` a group name has only letters, digits and `-_.`"
        ));
    }
    Ok(NameTemplate {
        text: text.to_string(),
        parts,
    })
}

fn value_match(v: &str) -> ValueMatch {
    if v == "*" {
        ValueMatch::Present
    } else {
        ValueMatch::Exact(v.to_string())
    }
}

/// `example.com`, `*.example.com`; a port is ignored, as in request matching.
fn parse_host(text: &str) -> Result<HostMatch, String> {
    let lower = text.trim().to_ascii_lowercase();
    let host = match lower.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => lower.as_str(),
    };
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !name.starts_with('.')
        && !name.ends_with('.');
    if !ok {
        return Err(format!(
            "`{text}` is not a host name (use e.g. \"example.com\" or \"*.example.com\")"
        ));
    }
    Ok(if wild {
        HostMatch::Wildcard(name.to_string())
    } else {
        HostMatch::Exact(name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_named_by_the_path_needs_the_regex_groups_it_uses() {
        let re = regex::Regex::new("^/(?<name>[a-z]+)/(?<version>v[0-9]+)/").unwrap();
        let t = name_template("${name}-${version}", &re).unwrap();
        assert_eq!(
            t.parts,
            [
                NamePart::Capture(1),
                NamePart::Lit("-".into()),
                NamePart::Capture(2)
            ]
        );
        assert!(name_template("${nope}", &re)
            .unwrap_err()
            .contains("name, version"));
        assert!(name_template("${name", &re).is_err());
        assert!(name_template("a b-${name}", &re).is_err());
    }

    #[test]
    fn hosts_are_lowercased_without_port() {
        assert_eq!(
            parse_host("Service2.com.br"),
            Ok(HostMatch::Exact("service2.com.br".into()))
        );
        assert_eq!(parse_host("a.b:8080"), Ok(HostMatch::Exact("a.b".into())));
        assert_eq!(
            parse_host("*.Example.com"),
            Ok(HostMatch::Wildcard("example.com".into()))
        );
        assert!(parse_host("a b").is_err());
        assert!(parse_host("*.").is_err());
        assert!(parse_host("a.*.b").is_err());
    }
}
