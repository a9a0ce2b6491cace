//! The config in force as JSON, for the admin API's `GET /config`: every key with its
//! effective value (defaults filled in), in the config file's own units, with secrets
//! redacted: the admin token, and header edits that carry credentials.

use super::{
    AdminConfig, Balance, Config, HashKey, HeaderEdits, HealthCheck, HostMatch, PathMatch, RetryOn,
    Route, ServerConfig, Upstream, ValueMatch,
};
use crate::http::edits::{Part, Template};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// What a redacted value reads as.
pub const REDACTED: &str = "<redacted>";

/// Header names whose configured values are credentials.
fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "key", "password"]
        .iter()
        .any(|w| n.contains(w))
}

/// `config` as JSON, secrets redacted.
pub fn to_json(config: &Config) -> Value {
    let upstreams: Map<String, Value> = config
        .upstreams
        .iter()
        .map(|u| (u.name.clone(), upstream(u)))
        .collect();
    json!({
        "origin": config.origin,
        "server": server(&config.server),
        "upstreams": upstreams,
        "routes": config.routes.iter().map(|r| route(r, config)).collect::<Vec<_>>(),
        "admin": config.admin.as_ref().map(admin),
        "cache": cache(&config.cache),
    })
}

fn cache(c: &super::CacheConfig) -> Value {
    json!({
        "max_bytes": c.max_bytes,
        "max_object_bytes": c.max_object_bytes,
        "default_ttl": duration(c.default_ttl),
        "key": c.key.iter().map(super::KeyPart::text).collect::<Vec<_>>(),
        "stale_while_revalidate": duration(c.stale_while_revalidate),
        "stale_if_error": duration(c.stale_if_error),
        "lock_timeout": duration(c.lock_timeout),
    })
}

/// `"500ms"`, `"2s"`, `"1m"`: the largest unit that says it exactly.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

fn server(s: &ServerConfig) -> Value {
    json!({
        "listen": s.listen.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        "workers": s.workers,
        "header_timeout": duration(s.header_timeout),
        "keepalive_timeout": duration(s.keepalive_timeout),
        "body_timeout": duration(s.body_timeout),
        "max_header_bytes": s.max_header_bytes,
        "max_headers": s.max_headers,
        "max_request_line": s.max_request_line,
        "error_format": match s.error_format {
            crate::error::ErrorFormat::Text => "text",
            crate::error::ErrorFormat::Json => "json",
        },
        "request_headers": edits(&s.request_headers),
        "response_headers": edits(&s.response_headers),
        "shutdown_timeout": duration(s.shutdown_timeout),
        "tls": s.tls.iter().map(|(l, t)| json!({
            "listen": l.to_string(),
            "certs": t.files.iter().map(|f| json!({
                "cert": f.cert.display().to_string(),
                "key": f.key.display().to_string(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "redirect_https": s.redirect_https.map(|l| l.to_string()),
        "upgrade_protocols": s.upgrade_protocols,
        "tunnel_idle_timeout": duration(s.tunnel_idle_timeout),
    })
}

fn upstream(u: &Upstream) -> Value {
    let balance = Balance::ALL
        .iter()
        .find(|(_, b)| *b == u.balance)
        .map_or("?", |(n, _)| n);
    json!({
        "servers": u.servers.iter().map(|s| json!({
            "addr": s.addr.to_string(),
            "weight": s.weight,
            "max_connections": s.max_connections,
            "backup": s.backup,
        })).collect::<Vec<_>>(),
        "balance": balance,
        "hash_key": u.hash_key.as_ref().map(|k| match k {
            HashKey::RemoteAddr => "$remote_addr".to_string(),
            HashKey::Uri => "$uri".to_string(),
            HashKey::Header(h) => format!("$header_{}", h.replace('-', "_")),
            HashKey::Cookie(c) => format!("$cookie_{c}"),
        }),
        "connect_timeout": duration(u.connect_timeout),
        "response_header_timeout": duration(u.response_header_timeout),
        "read_timeout": duration(u.read_timeout),
        "keepalive": u.keepalive,
        "keepalive_timeout": duration(u.keepalive_timeout),
        "max_fails": u.max_fails,
        "fail_window": duration(u.fail_window),
        "backoff": u.backoff.iter().map(|d| duration(*d)).collect::<Vec<_>>(),
        "fail_on_status": u.fail_on_status,
        "retries": u.retries,
        "retry_on": retry_on(&u.retry_on),
        "retry_body_max": u.retry_body_max,
        "idempotent_methods": u.idempotent_methods,
        "retry_budget": u.retry_budget,
        "request_timeout": u.request_timeout.map(duration),
        "slow_start": u.slow_start.map(duration),
        "health": u.health.as_ref().map(health),
        "tls": u.tls.as_ref().map(|t| json!({
            "sni": t.sni.as_ref().map(|n| n.to_str().into_owned()),
            "ca": t.ca.as_ref().map(|p| p.display().to_string()),
            "verify": t.verify,
        })),
    })
}

fn retry_on(r: &RetryOn) -> Vec<&'static str> {
    [
        (r.connect, "connect"),
        (r.timeout, "timeout"),
        (r.reset, "reset"),
        (r.status_502, "502"),
        (r.status_503, "503"),
        (r.status_504, "504"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

fn health(h: &HealthCheck) -> Value {
    json!({
        "path": h.path,
        "host": h.host,
        "interval": duration(h.interval),
        "timeout": duration(h.timeout),
        "rise": h.rise,
        "fall": h.fall,
        "expect_status": h.expect.iter().map(|(lo, hi)| if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }).collect::<Vec<_>>(),
        "start": if h.start_down { "down" } else { "up" },
    })
}

fn route(r: &Route, config: &Config) -> Value {
    let mut out = Map::new();
    if !r.hosts.is_empty() {
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| match h {
                HostMatch::Exact(n) => n.clone(),
                HostMatch::Wildcard(n) => format!("*.{n}"),
            })
            .collect();
        out.insert("host".into(), json!(hosts));
    }
    match &r.path {
        PathMatch::Any => {}
        PathMatch::Prefix(p) => drop(out.insert("path_prefix".into(), json!(p))),
        PathMatch::Exact(p) => drop(out.insert("path".into(), json!(p))),
        PathMatch::Regex(re) => drop(out.insert("path_regex".into(), json!(re.as_str()))),
    }
    if !r.methods.is_empty() {
        out.insert("methods".into(), json!(r.methods));
    }
    let conditions = |list: &[(String, ValueMatch)]| -> Map<String, Value> {
        list.iter()
            .map(|(k, v)| {
                let v = match v {
                    ValueMatch::Present => "*".to_string(),
                    ValueMatch::Exact(x) => x.clone(),
                };
                (k.clone(), json!(v))
            })
            .collect()
    };
    if !r.headers.is_empty() {
        out.insert("headers".into(), Value::Object(conditions(&r.headers)));
    }
    if !r.query.is_empty() {
        out.insert("query".into(), Value::Object(conditions(&r.query)));
    }
    let name = match &r.upstream {
        super::Target::Group(g) => Some(config.upstreams.get(*g).map_or("?", |u| u.name.as_str())),
        super::Target::FromPath(t) => Some(t.text.as_str()),
        super::Target::Local => None,
    };
    if let Some(name) = name {
        out.insert("upstream".into(), json!(name));
    }
    match &r.local {
        Some(super::LocalAnswer::Respond {
            status,
            headers,
            body,
        }) => {
            let headers: serde_json::Map<String, Value> =
                headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
            out.insert(
                "respond".into(),
                json!({ "status": status, "headers": headers, "body": String::from_utf8_lossy(body) }),
            );
        }
        Some(super::LocalAnswer::Redirect { status, to }) => {
            let to: String = to
                .iter()
                .map(|p| match p {
                    super::RedirectPart::Lit(l) => l.replace('$', "$$"),
                    super::RedirectPart::Var(v) => format!("${}", v.name()),
                })
                .collect();
            out.insert("redirect".into(), json!({ "to": to, "status": status }));
        }
        None => {}
    }
    if !r.access.is_empty() {
        let list = |v: &[super::Cidr]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        out.insert("allow".into(), json!(list(&r.access.allow)));
        out.insert("deny".into(), json!(list(&r.access.deny)));
    }
    if r.strip_prefix {
        out.insert("strip_prefix".into(), json!(true));
    }
    if let Some(p) = &r.rewrite_prefix {
        out.insert("rewrite_prefix".into(), json!(p));
    }
    out.insert("request_headers".into(), edits(&r.request_headers));
    out.insert("response_headers".into(), edits(&r.response_headers));
    if let Some(c) = &r.cache {
        out.insert(
            "cache".into(),
            json!({
                "default_ttl": duration(c.default_ttl),
                "key": c.key.iter().map(super::KeyPart::text).collect::<Vec<_>>(),
                "allow_set_cookie": c.allow_set_cookie,
            }),
        );
    }
    Value::Object(out)
}

fn edits(e: &HeaderEdits) -> Value {
    let values = |list: &[(String, Template)]| -> Map<String, Value> {
        list.iter()
            .map(|(name, t)| {
                let v = if is_secret_header(name) {
                    REDACTED.to_string()
                } else {
                    template(t)
                };
                (name.clone(), json!(v))
            })
            .collect()
    };
    json!({ "set": values(&e.set), "add": values(&e.add), "remove": e.remove })
}

/// A template as it was written (`$$` for a literal dollar).
fn template(t: &Template) -> String {
    let mut out = String::new();
    for p in &t.parts {
        match p {
            Part::Lit(bytes) => out.push_str(&String::from_utf8_lossy(bytes).replace('$', "$$")),
            Part::Var(v) => {
                out.push('$');
                out.push_str(v.name());
            }
        }
    }
    out
}

fn admin(a: &AdminConfig) -> Value {
    json!({
        "listen": a.listen.to_string(),
        "token": a.token.as_ref().map(|_| REDACTED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_in_force_shows_defaults_in_config_units_and_hides_secrets() {
        let c = Config::parse(
            "[server]\nlisten = \"127.0.0.1:0\"\nrequest_headers = { set = { Authorization = \"Bearer xyz\", \"X-Env\" = \"a$$b $host\" } }\n\
             [upstreams.web]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath_prefix = \"/api\"\nupstream = \"web\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n",
            "t.toml",
        )
        .unwrap();
        let v = to_json(&c);
        let text = v.to_string();
        assert!(!text.contains("s3cret") && !text.contains("xyz"), "{text}");
        assert_eq!(v["admin"]["token"], REDACTED);
        assert_eq!(
            v["server"]["request_headers"]["set"]["Authorization"],
            REDACTED
        );
        assert_eq!(v["server"]["request_headers"]["set"]["X-Env"], "a$$b $host");
        assert_eq!(v["server"]["header_timeout"], "10s");
        assert_eq!(v["upstreams"]["web"]["backoff"], json!(["1s", "5s", "30s"]));
        assert_eq!(
            v["upstreams"]["web"]["retry_on"],
            json!(["connect", "timeout", "reset"])
        );
        assert_eq!(v["routes"][0]["path_prefix"], "/api");
        assert_eq!(v["routes"][0]["upstream"], "web");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
    }
}
