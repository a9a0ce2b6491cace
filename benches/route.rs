//! Decides whether route lookup needs more work as tables grow: the router indexes
//! `path_prefix` routes in hash maps, so a lookup should cost the same with 1 or 1,000
//! routes, and stay a negligible share of the ~15 µs a proxied request costs.
//!
//! Each table has N `[[routes]]` with distinct prefixes `/svc{i}/api` over a few
//! upstream groups, then a catch-all `/` (routes are tried in file order, so `/` comes
//! last). Two lookups: a path matching the last prefix route (the worst hit for a scan)
//! and one that only `/` matches (a miss on every prefix).

use divan::{black_box, Bencher};
use ringway::config::Config;
use ringway::route::{RequestView, Router};

fn main() {
    divan::main();
}

/// Route counts: a single service, a typical site, a large gateway, an extreme one.
const ROUTES: &[usize] = &[1, 10, 100, 1000];

/// A config with `n` prefix routes spread over four groups, and `/` last.
fn config(n: usize) -> Config {
    let mut text = String::new();
    for g in 0..4 {
        text.push_str(&format!(
            "[upstreams.g{g}]\nservers = [\"127.0.0.1:{}\"]\n",
            9001 + g
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "[[routes]]\npath_prefix = \"/svc{i}/api\"\nupstream = \"g{}\"\n",
            i % 4
        ));
    }
    text.push_str("[[routes]]\npath_prefix = \"/\"\nupstream = \"g0\"\n");
    let c = Config::parse(&text, "bench").expect("generated config is valid");
    assert_eq!(c.routes.len(), n + 1);
    c
}

/// A browser-like GET for `path` (no query; routing reads no header here).
fn view(path: &str) -> RequestView<'_> {
    RequestView {
        method: "GET",
        host: "shop.example.com",
        path,
        query: "",
        headers: &[],
    }
}

/// Hit on the last prefix route, `/svc{n-1}/api`.
#[divan::bench(args = ROUTES)]
fn match_near_the_end(bencher: Bencher, n: usize) {
    let router = Router::new(&config(n));
    let path = format!("/svc{}/api/users/42/orders", n - 1);
    assert_eq!(router.find(&view(&path)), Some(n - 1));
    bencher.bench_local(|| router.find(black_box(&view(&path))));
}

/// Only `/` matches: no prefix route does.
#[divan::bench(args = ROUTES)]
fn fall_through_to_root(bencher: Bencher, n: usize) {
    let router = Router::new(&config(n));
    let path = "/static/js/app.3f9c1e.js";
    assert_eq!(router.find(&view(path)), Some(n));
    bencher.bench_local(|| router.find(black_box(&view(path))));
}
