//! Route matching: which upstream group a request goes to.
//!
//! Built once from the validated config and shared read-only by every worker. For
//! now routes match on `path_prefix` only: the longest prefix wins, then file order
//! (the config sorts them that way).

use crate::config::{Config, Route, UpstreamId};

/// The route table of one config, in match order.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router over `config.routes` (already sorted longest prefix first).
    pub fn new(config: &Config) -> Router {
        Router {
            routes: config.routes.clone(),
        }
    }

    /// The upstream group for a request with this path (no query), if any route matches.
    pub fn find(&self, path: &str) -> Option<UpstreamId> {
        self.routes
            .iter()
            .find(|r| has_prefix(path, &r.path_prefix))
            .map(|r| r.upstream)
    }
}

/// `OPTIONS *` has no path; it goes wherever `/` goes.
fn has_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix) || (path == "*" && prefix == "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_then_file_order() {
        let c = Config::parse(
            "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[upstreams.b]\nservers=[\"127.0.0.1:2\"]\n\
             [[routes]]\npath_prefix=\"/\"\nupstream=\"a\"\n\
             [[routes]]\npath_prefix=\"/api\"\nupstream=\"b\"\n\
             [[routes]]\npath_prefix=\"/api\"\nupstream=\"a\"\n",
            "t",
        )
        .unwrap();
        let r = Router::new(&c);
        let b = c.upstreams.iter().position(|u| u.name == "b");
        let a = c.upstreams.iter().position(|u| u.name == "a");
        assert_eq!(r.find("/api/users"), b);
        assert_eq!(r.find("/other"), a);
        assert_eq!(r.find("*"), a);
    }

    #[test]
    fn no_match_is_none() {
        let c = Config::parse(
            "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\npath_prefix=\"/only\"\nupstream=\"a\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(Router::new(&c).find("/elsewhere"), None);
    }
}
