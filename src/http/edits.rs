//! Header edits (`request_headers` / `response_headers` under `[server]` and routes)
//! and the value templates they use (`"Bearer xyz"`, `"$remote_addr"`).
//!
//! Templates are parsed once at load into literal and variable parts, so the hot path
//! only copies bytes ([`super::rewrite`] writes them); `config` validates the raw
//! tables into these types and names the key of any error.

use super::is_hop_by_hop;

/// A variable usable in header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$remote_port`: the client's TCP port.
    RemotePort,
    /// `$host`: the request's host (Host header or absolute-form authority).
    Host,
    /// `$scheme`: `http` or `https`, from the listener the request came in on.
    Scheme,
    /// `$request_id`: the request's id (the client's `X-Request-Id`, or a new one).
    RequestId,
    /// `$upstream_addr`: the server that answered (response headers only).
    UpstreamAddr,
}

impl Var {
    /// The variable's name, without `$`.
    pub fn name(self) -> &'static str {
        Var::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    const NAMES: [(&'static str, Var); 6] = [
        ("remote_addr", Var::RemoteAddr),
        ("remote_port", Var::RemotePort),
        ("host", Var::Host),
        ("scheme", Var::Scheme),
        ("request_id", Var::RequestId),
        ("upstream_addr", Var::UpstreamAddr),
    ];
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes copied as written.
    Lit(Vec<u8>),
    /// A value filled in per request.
    Var(Var),
}

/// A header value with variables, parsed once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Literal and variable parts in order.
    pub parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; `$name` is a variable, `$$` a literal dollar sign.
    ///
    /// `response`: whether `$upstream_addr` is allowed (it is known only once a server answered).
    pub fn parse(text: &str, response: bool) -> Result<Template, String> {
        if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err("a header value cannot contain CR, LF or NUL".into());
        }
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.extend_from_slice(&rest.as_bytes()[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                lit.push(b'$');
                rest = r;
                continue;
            }
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            let name = &after[..len];
            let Some(&(_, var)) = Var::NAMES.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = Var::NAMES
                    .iter()
                    .filter(|(_, v)| response || *v != Var::UpstreamAddr)
                    .map(|(n, _)| format!("${n}"))
                    .collect();
                return Err(format!(
                    "unknown variable `${name}` (known: {}; `$$` for a dollar sign)",
                    known.join(", ")
                ));
            };
            if var == Var::UpstreamAddr && !response {
                return Err("`$upstream_addr` is only known in response_headers".into());
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(var));
            rest = &after[len..];
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// True when the template refers to `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }
}

/// Header edits of one scope: applied as remove, then set (replacing), then add.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Headers replaced by these values (any existing ones are dropped).
    pub set: Vec<(String, Template)>,
    /// Headers appended, keeping existing ones.
    pub add: Vec<(String, Template)>,
    /// Headers dropped.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// No edits: what a scope without any stands for.
    pub const NONE: HeaderEdits = HeaderEdits {
        set: Vec::new(),
        add: Vec::new(),
        remove: Vec::new(),
    };

    /// True when there is nothing to do (the hot path then skips all checks).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// True when an incoming header `name` must not be passed on as is.
    pub fn drops(&self, name: &str) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// True when any value refers to `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.set.iter().chain(&self.add).any(|(_, t)| t.uses(var))
    }
}

/// Checks that a header name is a valid token and not one the proxy owns (framing,
/// hop-by-hop); the error says which.
pub fn check_name(name: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("`{name}` is not a valid header name"));
    }
    if is_hop_by_hop(name) {
        return Err(format!(
            "`{name}` is managed by the proxy (framing and hop-by-hop headers cannot be edited)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_literals_and_variables() {
        let t = Template::parse("Bearer xyz", false).unwrap();
        assert_eq!(t.parts, [Part::Lit(b"Bearer xyz".to_vec())]);
        let t = Template::parse("for=$remote_addr:$remote_port $$5", false).unwrap();
        assert_eq!(
            t.parts,
            [
                Part::Lit(b"for=".to_vec()),
                Part::Var(Var::RemoteAddr),
                Part::Lit(b":".to_vec()),
                Part::Var(Var::RemotePort),
                Part::Lit(b" $5".to_vec()),
            ]
        );
    }

    #[test]
    fn unknown_or_misplaced_variables_are_errors() {
        assert!(Template::parse("$ip", false).unwrap_err().contains("$ip"));
        assert!(Template::parse("$upstream_addr", false).is_err());
        assert!(Template::parse("$upstream_addr", true).is_ok());
        assert!(Template::parse("a\r\nb", false).is_err());
    }

    #[test]
    fn framing_headers_cannot_be_edited() {
        assert!(check_name("Content-Length").is_err());
        assert!(check_name("Connection").is_err());
        assert!(check_name("bad name").is_err());
        assert!(check_name("X-Forward-For").is_ok());
    }
}
