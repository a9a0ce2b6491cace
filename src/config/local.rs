//! Routes answered without an upstream (`respond`, `redirect`), a route's rate `limit`,
//! and the address lists that admit clients (`allow`, `deny`, in `[server]` and per
//! route): validated here, used by the request path with no allocation.

use super::raw::RawRoute;
use super::ConfigError;
use std::net::IpAddr;

/// What a route without an upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAnswer {
    /// `respond = { status, body, headers }`.
    Respond {
        /// The status code (200-599).
        status: u16,
        /// Header lines as written (`Name: value`), `Content-Type` defaulted.
        headers: Vec<(String, String)>,
        /// The body (none for 204 and 304, and for HEAD requests).
        body: Box<[u8]>,
    },
    /// `redirect = { to, status }`.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The `Location`, with variables filled in per request.
        to: Vec<RedirectPart>,
    },
}

/// A piece of a redirect's `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPart {
    /// Text as written (`$$` is a `$`).
    Lit(String),
    /// A request variable.
    Var(RedirectVar),
}

/// Variables a redirect may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectVar {
    /// `$host`: the request's host, without its port.
    Host,
    /// `$http_host`: the request's host as sent, port included.
    HttpHost,
    /// `$request_uri`: the target as sent: path and query.
    RequestUri,
    /// `$uri`: the path as sent, without the query.
    Uri,
    /// `$args`: the query without its `?`.
    Args,
    /// `$scheme`: `http` or `https`.
    Scheme,
}

impl RedirectVar {
    /// The variable's name, without `$`.
    pub fn name(self) -> &'static str {
        RedirectVar::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    const NAMES: [(&'static str, RedirectVar); 6] = [
        ("request_uri", RedirectVar::RequestUri),
        ("http_host", RedirectVar::HttpHost),
        ("scheme", RedirectVar::Scheme),
        ("host", RedirectVar::Host),
        ("args", RedirectVar::Args),
        ("uri", RedirectVar::Uri),
    ];
}

/// Parses a redirect's `to`: text with `$host`, `$http_host`, `$request_uri`, `$uri`,
/// `$args`, `$scheme` (and `$$` for a dollar sign).
pub fn parse_redirect(text: &str) -> Result<Vec<RedirectPart>, String> {
    if text.is_empty() || text.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err("needs a URL without control characters".into());
    }
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            lit.push('$');
            rest = r;
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        let Some(&(_, var)) = RedirectVar::NAMES.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = RedirectVar::NAMES
                .iter()
                .map(|(n, _)| format!("${n}"))
                .collect();
            return Err(format!(
                "unknown variable `${name}` (known: {})",
                known.join(", ")
            ));
        };
        if !lit.is_empty() {
            parts.push(RedirectPart::Lit(std::mem::take(&mut lit)));
        }
        parts.push(RedirectPart::Var(var));
        rest = &rest[name.len()..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(RedirectPart::Lit(lit));
    }
    Ok(parts)
}

/// A route's `limit = { rate = "100/s", burst = 50, key = "$remote_addr" }`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests per second over the whole process.
    pub per_sec: f64,
    /// Requests allowed at once beyond the rate.
    pub burst: u32,
    /// What a bucket is kept per.
    pub key: super::HashKey,
    /// As written (`100/s`), for messages and `GET /config`.
    pub text: String,
}

/// Parses `N/s`, `N/m` or `N/h` (N a positive number) into requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let err = || format!("`{text}` is not a rate: write N/s, N/m or N/h, e.g. \"100/s\"");
    let (n, unit) = text.split_once('/').ok_or_else(err)?;
    let n: f64 = n.trim().parse().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(err());
    }
    Ok(n / per)
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare address; host bits must be zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0-{max}"))?,
        };
        let c = Cidr { net, prefix };
        if !c.contains(net) || c.masked(net) != bits(net) {
            return Err(format!("`{text}`: address bits set beyond the prefix"));
        }
        Ok(c)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let shift = width - u32::from(self.prefix);
        match shift {
            0 => bits(ip),
            s if s >= 128 => 0,
            s => bits(ip) >> s << s,
        }
    }

    /// True when `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == self.masked(self.net)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// `allow` and `deny` lists: an address in `deny` is refused; with an `allow` list,
/// only addresses in it pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Blocks admitted (empty: everyone not denied).
    pub allow: Vec<Cidr>,
    /// Blocks refused (checked first).
    pub deny: Vec<Cidr>,
}

impl Access {
    /// True when the lists admit `ip`.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }

    /// True when there are no lists.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Parses the two lists; `Err((which, message))`.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Access, (&'static str, String)> {
        let list = |v: &[String], which| {
            v.iter()
                .map(|t| Cidr::parse(t).map_err(|m| (which, m)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Access {
            allow: list(allow, "allow")?,
            deny: list(deny, "deny")?,
        })
    }
}

impl super::Validator<'_> {
    /// A route's `limit`, validated.
    pub(super) fn rate_limit(
        &self,
        raw: Option<&toml::Spanned<super::raw::RawLimit>>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<Option<RateLimit>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let (span, l) = (raw.span(), raw.get_ref());
        let per_sec =
            parse_rate(&l.rate).or_else(|m| self.err(span.clone(), key("limit.rate"), m))?;
        // Default burst: one second's worth (at least 1), as nginx users size it.
        let burst = match l.burst {
            None => per_sec.ceil().clamp(1.0, 1e6) as u32,
            Some(b) if (1..=1_000_000).contains(&b) => b as u32,
            Some(b) => {
                return self.err(
                    span,
                    key("limit.burst"),
                    format!("must be 1-1000000, got {b}"),
                )
            }
        };
        let hash_key = match l.key.as_deref() {
            None => super::HashKey::RemoteAddr,
            Some(k) => {
                super::HashKey::parse(k).or_else(|m| self.err(span.clone(), key("limit.key"), m))?
            }
        };
        Ok(Some(RateLimit {
            per_sec,
            burst,
            key: hash_key,
            text: l.rate.clone(),
        }))
    }

    /// A route's `respond` or `redirect`, validated.
    pub(super) fn local_answer(
        &self,
        r: &RawRoute,
        key: &dyn Fn(&str) -> String,
    ) -> Result<Option<LocalAnswer>, ConfigError> {
        if let Some(resp) = &r.respond {
            let (span, raw) = (resp.span(), resp.get_ref());
            if !(200..=599).contains(&raw.status) {
                return self.err(
                    span,
                    key("respond.status"),
                    format!("must be 200-599, got {}", raw.status),
                );
            }
            let mut headers = Vec::new();
            for (name, value) in &raw.headers {
                let bad_name = name.is_empty() || !name.bytes().all(crate::http::is_token_byte);
                if bad_name || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return self.err(
                        span,
                        key("respond.headers"),
                        format!("`{name}` is not a valid header"),
                    );
                }
                let framing = ["content-length", "transfer-encoding", "connection"];
                if framing.iter().any(|f| f.eq_ignore_ascii_case(name)) {
                    return self.err(
                        span,
                        key("respond.headers"),
                        format!("`{name}` is set by the proxy"),
                    );
                }
                headers.push((name.clone(), value.clone()));
            }
            let bodiless = raw.status == 204 || raw.status == 304;
            if bodiless && !raw.body.is_empty() {
                return self.err(
                    span,
                    key("respond.body"),
                    format!("a {} has no body", raw.status),
                );
            }
            let typed = headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
            if !raw.body.is_empty() && !typed {
                headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
            }
            return Ok(Some(LocalAnswer::Respond {
                status: raw.status as u16,
                headers,
                body: raw.body.as_bytes().into(),
            }));
        }
        if let Some(red) = &r.redirect {
            let (span, raw) = (red.span(), red.get_ref());
            if ![301, 302, 303, 307, 308].contains(&raw.status) {
                return self.err(
                    span,
                    key("redirect.status"),
                    format!("must be 301, 302, 303, 307 or 308, got {}", raw.status),
                );
            }
            let to = parse_redirect(&raw.to).or_else(|m| self.err(span, key("redirect.to"), m))?;
            return Ok(Some(LocalAnswer::Redirect {
                status: raw.status as u16,
                to,
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_and_mapped_ipv4_counts() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            net.contains(ip("::ffff:10.1.2.3")),
            "a dual-stack socket's IPv4 peer"
        );
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deny_wins_and_an_allow_list_admits_only_its_blocks() {
        let a = Access::parse(&["10.0.0.0/8".into()], &["10.9.0.0/16".into()]).unwrap();
        assert!(a.admits(ip("10.1.1.1")));
        assert!(!a.admits(ip("10.9.1.1")));
        assert!(!a.admits(ip("192.168.1.1")));
        assert!(Access::default().admits(ip("192.168.1.1")));
    }

    #[test]
    fn redirect_templates_know_their_variables() {
        let parts = parse_redirect("https://$host$request_uri").unwrap();
        assert_eq!(
            parts,
            [
                RedirectPart::Lit("https://".into()),
                RedirectPart::Var(RedirectVar::Host),
                RedirectPart::Var(RedirectVar::RequestUri)
            ]
        );
        assert_eq!(
            parse_redirect("/a$$b").unwrap(),
            [RedirectPart::Lit("/a$b".into())]
        );
        let err = parse_redirect("https://$hostname/").unwrap_err();
        assert!(
            err.contains("`$hostname`") && err.contains("$host"),
            "{err}"
        );
        assert!(parse_redirect("https://$nope").is_err());
    }
}
