//! Route matching: which `[[routes]]` entry, and so which upstream group, a request goes to.
//!
//! Routes are tried in file order and the first whose conditions all hold wins. To keep
//! the cost flat with hundreds of routes, the table is indexed by host (exact names,
//! wildcard suffixes, any host), then by path (a map per prefix and per exact path), so a
//! lookup costs a few hash probes per path segment instead of a scan. Only routes with a
//! regex or no path condition are scanned. Built once per snapshot, off the hot path, and read-only after.

use crate::config::{Config, HostMatch, PathMatch, Route, ValueMatch};
// FNV: route keys are short config strings, where it beats SipHash; clients do not
// choose the table's keys, so hash flooding is not a concern for its shape.
use crate::hash::FnvMap;

/// What a route looks at in a request; everything borrows the parsed head.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method token.
    pub method: &'a str,
    /// Host as sent (any case, maybe with a port); empty when the request had none.
    pub host: &'a str,
    /// The normalized path (see `http::path`), or `*`.
    pub path: &'a str,
    /// The query string without `?` (empty when none).
    pub query: &'a str,
    /// All request header fields.
    pub headers: &'a [httparse::Header<'a>],
}

/// Routes of one host key, indexed by path. Every list is in file order.
#[derive(Debug, Default)]
struct Table {
    prefix: FnvMap<Vec<u32>>,
    exact: FnvMap<Vec<u32>>,
    scan: Vec<u32>,
}

impl Table {
    fn insert(&mut self, i: u32, path: &PathMatch) {
        match path {
            PathMatch::Prefix(p) => self.prefix.entry(p.clone()).or_default().push(i),
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(i),
            PathMatch::Any | PathMatch::Regex(_) => self.scan.push(i),
        }
    }
}

/// The route table of one config.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    any_host: Table,
    exact_host: FnvMap<Table>,
    wildcard_host: FnvMap<Table>,
}

/// Longest host name looked up (DNS limit); longer ones only match host-less routes.
const MAX_HOST: usize = 253;

impl Router {
    /// Indexes `config.routes`.
    pub fn new(config: &Config) -> Router {
        let mut r = Router {
            routes: config.routes.clone(),
            any_host: Table::default(),
            exact_host: FnvMap::default(),
            wildcard_host: FnvMap::default(),
        };
        for (i, route) in config.routes.iter().enumerate() {
            let i = i as u32;
            if route.hosts.is_empty() {
                r.any_host.insert(i, &route.path);
            }
            for h in &route.hosts {
                let table = match h {
                    HostMatch::Exact(name) => r.exact_host.entry(name.clone()).or_default(),
                    HostMatch::Wildcard(suffix) => {
                        r.wildcard_host.entry(suffix.clone()).or_default()
                    }
                };
                table.insert(i, &route.path);
            }
        }
        r
    }

    /// The route at `index` (as returned by [`Router::find`]).
    pub fn route(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// Every route, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The index of the first route in file order whose conditions all hold.
    pub fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        let mut best = u32::MAX;
        if !self.exact_host.is_empty() || !self.wildcard_host.is_empty() {
            let mut buf = [0u8; MAX_HOST];
            if let Some(host) = lower_host(req.host, &mut buf) {
                if let Some(t) = self.exact_host.get(host) {
                    self.search(t, req, &mut best);
                }
                if !self.wildcard_host.is_empty() {
                    for (i, _) in host.match_indices('.') {
                        if let Some(t) = self.wildcard_host.get(&host[i + 1..]) {
                            self.search(t, req, &mut best);
                        }
                    }
                }
            }
        }
        self.search(&self.any_host, req, &mut best);
        (best != u32::MAX).then_some(best as usize)
    }

    /// Lowers `best` to the first route of `t` that matches and comes before it.
    fn search(&self, t: &Table, req: &RequestView<'_>, best: &mut u32) {
        let mut consider = |list: &[u32], check_path: bool| {
            for &i in list {
                if i >= *best {
                    break;
                }
                if self.conditions_hold(&self.routes[i as usize], req, check_path) {
                    *best = i;
                    break;
                }
            }
        };
        if !t.prefix.is_empty() {
            if let Some(l) = t.prefix.get("/") {
                consider(l, false);
            }
            if req.path != "*" {
                let p = req.path;
                for (k, _) in p.match_indices('/').skip(1) {
                    if let Some(l) = t.prefix.get(&p[..k]) {
                        consider(l, false);
                    }
                }
                if p.len() > 1 && !p.ends_with('/') {
                    if let Some(l) = t.prefix.get(p) {
                        consider(l, false);
                    }
                }
            }
        }
        if !t.exact.is_empty() {
            if let Some(l) = t.exact.get(req.path) {
                consider(l, false);
            }
        }
        consider(&t.scan, true);
    }

    /// Checks the conditions the index did not already decide.
    fn conditions_hold(&self, r: &Route, req: &RequestView<'_>, check_path: bool) -> bool {
        if check_path {
            let ok = match &r.path {
                PathMatch::Any => true,
                PathMatch::Regex(re) => re.is_match(req.path),
                PathMatch::Prefix(p) => prefix_matches(req.path, p),
                PathMatch::Exact(p) => req.path == p,
            };
            if !ok {
                return false;
            }
        }
        if !r.methods.is_empty() && !r.methods.iter().any(|m| m == req.method) {
            return false;
        }
        let headers_ok = r.headers.iter().all(|(name, want)| {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .any(|h| match want {
                    ValueMatch::Present => true,
                    ValueMatch::Exact(v) => crate::http::trim(h.value) == v.as_bytes(),
                })
        });
        headers_ok
            && r.query.iter().all(|(name, want)| {
                req.query.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == name
                        && match want {
                            ValueMatch::Present => true,
                            ValueMatch::Exact(x) => v == x,
                        }
                })
            })
    }
}

/// Segment-aware prefix test: `/api` matches `/api` and `/api/x`, not `/apix`.
pub fn prefix_matches(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// The host without port, lowercased into `buf`; `None` when empty or too long.
fn lower_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let name = crate::http::strip_port(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST {
        return None;
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    // Lowercasing ASCII keeps the bytes valid UTF-8.
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &str) -> (Config, Router) {
        let c = Config::parse(
            &format!(
                "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[upstreams.b]\nservers=[\"127.0.0.1:2\"]\n[upstreams.c]\nservers=[\"127.0.0.1:3\"]\n{routes}"
            ),
            "t",
        )
        .unwrap();
        let r = Router::new(&c);
        (c, r)
    }

    fn view<'a>(
        method: &'a str,
        host: &'a str,
        path: &'a str,
        headers: &'a [httparse::Header<'a>],
    ) -> RequestView<'a> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        RequestView {
            method,
            host,
            path,
            query,
            headers,
        }
    }

    fn up(c: &Config, r: &Router, v: RequestView<'_>) -> Option<String> {
        r.find(&v).map(|i| match &r.route(i).upstream {
            crate::config::Target::Group(g) => c.upstreams[*g].name.clone(),
            crate::config::Target::FromPath(t) => t.text.clone(),
            crate::config::Target::Local => "-".into(),
        })
    }

    #[test]
    fn caddy_seed_header_host_and_path_rules() {
        let (c, r) = router(
            "[[routes]]\nheaders = { \"x-service-1\" = \"*\" }\nupstream = \"a\"\n\
             [[routes]]\nhost = \"service2.com.br\"\nupstream = \"b\"\n\
             [[routes]]\npath_prefix = \"/test\"\nupstream = \"c\"\n",
        );
        let h = [httparse::Header {
            name: "X-Service-1",
            value: b"yes",
        }];
        assert_eq!(
            up(&c, &r, view("GET", "x", "/test", &h)).as_deref(),
            Some("a")
        );
        assert_eq!(
            up(&c, &r, view("GET", "Service2.COM.br:8080", "/test", &[])).as_deref(),
            Some("b")
        );
        assert_eq!(
            up(&c, &r, view("GET", "x", "/test/1", &[])).as_deref(),
            Some("c")
        );
        assert_eq!(up(&c, &r, view("GET", "x", "/testing", &[])), None);
    }

    #[test]
    fn file_order_wins_over_specificity() {
        let (c, r) = router(
            "[[routes]]\npath_prefix = \"/\"\nupstream = \"a\"\n\
             [[routes]]\npath_prefix = \"/api\"\nupstream = \"b\"\n",
        );
        assert_eq!(
            up(&c, &r, view("GET", "", "/api/x", &[])).as_deref(),
            Some("a")
        );
        let (c, r) = router(
            "[[routes]]\npath_prefix = \"/api/\"\nupstream = \"b\"\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"a\"\n",
        );
        assert_eq!(
            up(&c, &r, view("GET", "", "/api", &[])).as_deref(),
            Some("b")
        );
        assert_eq!(
            up(&c, &r, view("GET", "", "/apix", &[])).as_deref(),
            Some("a")
        );
        assert_eq!(
            up(&c, &r, view("OPTIONS", "", "*", &[])).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn each_matcher_alone_and_combined() {
        let (c, r) = router(
            "[[routes]]\nhost = [\"*.example.com\", \"example.org\"]\npath = \"/exact\"\nmethods = [\"GET\", \"HEAD\"]\nquery = { v = \"2\" }\nupstream = \"a\"\n\
             [[routes]]\npath_regex = \"^/users/[0-9]+$\"\nupstream = \"b\"\n\
             [[routes]]\nheaders = { \"x-env\" = \"staging\" }\nupstream = \"c\"\n",
        );
        let get = |host, path| up(&c, &r, view("GET", host, path, &[]));
        assert_eq!(get("a.example.com", "/exact?x=1&v=2").as_deref(), Some("a"));
        assert_eq!(get("a.b.example.com", "/exact?v=2").as_deref(), Some("a"));
        assert_eq!(get("example.org", "/exact?v=2").as_deref(), Some("a"));
        assert_eq!(
            get("example.com", "/exact?v=2"),
            None,
            "wildcard needs a subdomain"
        );
        assert_eq!(get("a.example.com", "/exact?v=3"), None);
        assert_eq!(get("a.example.com", "/exact/more?v=2"), None);
        assert_eq!(
            up(&c, &r, view("POST", "a.example.com", "/exact?v=2", &[])),
            None
        );
        assert_eq!(get("any", "/users/42").as_deref(), Some("b"));
        assert_eq!(get("any", "/users/x"), None);
        let h = [httparse::Header {
            name: "X-Env",
            value: b"staging",
        }];
        assert_eq!(up(&c, &r, view("GET", "h", "/", &h)).as_deref(), Some("c"));
        let h = [httparse::Header {
            name: "X-Env",
            value: b"prod",
        }];
        assert_eq!(up(&c, &r, view("GET", "h", "/", &h)), None);
    }

    #[test]
    fn a_thousand_prefixes_are_indexed() {
        let mut routes = String::new();
        for i in 0..1000 {
            routes.push_str(&format!(
                "[[routes]]\npath_prefix = \"/svc{i}/api\"\nupstream = \"a\"\n"
            ));
        }
        routes.push_str("[[routes]]\npath_prefix = \"/\"\nupstream = \"b\"\n");
        let (_, r) = router(&routes);
        assert_eq!(r.find(&view("GET", "", "/svc999/api/x", &[])), Some(999));
        assert_eq!(r.find(&view("GET", "", "/svc999/apix", &[])), Some(1000));
    }
}
