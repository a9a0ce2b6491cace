//! The runtime service registry of the admin API (seed 003's Add, Delete, Failure and
//! Lookup): upstream groups and servers changed while ringway runs.
//!
//! - `GET /upstreams`: every group, its servers, their states and counts.
//! - `POST /upstreams/NAME/servers` with `{"addr": "...", "weight": N, "backup": false}`:
//!   adds a server (the group is created, with default settings, if new).
//! - `DELETE /upstreams/NAME/servers/ADDR`: drains it: no new requests, those in flight
//!   finish (shown as `draining` until they have), idle connections close; removed.
//! - `POST /upstreams/NAME/servers/ADDR/down` and `/up`: an operator's mark-down, shown
//!   in status, or its lifting.
//!
//! Config changes go through the same path as a reload (a new snapshot for every
//! worker, nothing dropped) and last until the file is reloaded: every answer says
//! `"persisted": false`. A mark-down is health state, kept while the server is.

use super::admin::{scrape, servers_json, Request, Response};
use super::{Source, State};
use crate::config::{Config, Server};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// `POST /upstreams/NAME/servers` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServer {
    addr: String,
    #[serde(default = "one")]
    weight: i64,
    #[serde(default)]
    backup: bool,
    max_connections: Option<i64>,
}

fn one() -> i64 {
    1
}

/// Answers a request under `/upstreams`.
pub(super) async fn handle(state: &Rc<RefCell<State>>, req: &Request) -> Response {
    let segments: Vec<String> = req
        .path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method.as_str();
    match (parts.as_slice(), method) {
        (["upstreams"], "GET" | "HEAD") => list(state).await,
        (["upstreams"], _) => Response::method_not_allowed("GET, HEAD"),
        (["upstreams", name, "servers"], "POST") => add(state, name, &req.body),
        (["upstreams", _, "servers"], _) => Response::method_not_allowed("POST"),
        (["upstreams", name, "servers", addr], "DELETE") => remove(state, name, addr),
        (["upstreams", _, "servers", _], _) => Response::method_not_allowed("DELETE"),
        (["upstreams", name, "servers", addr, verb @ ("down" | "up")], "POST") => {
            mark(state, name, addr, *verb == "down")
        }
        (["upstreams", _, "servers", _, "down" | "up"], _) => Response::method_not_allowed("POST"),
        _ => Response::error(404, format!("no admin endpoint `{}`", req.path)),
    }
}

/// `%3A` and friends in a path segment (an IPv6 address in brackets, say).
pub(super) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /upstreams`.
async fn list(state: &Rc<RefCell<State>>) -> Response {
    let stats = scrape(state).await;
    let s = state.borrow();
    Response::json(
        200,
        json!({
            "generation": s.snapshot.generation,
            "upstreams": servers_json(&s, &stats, Instant::now()),
        }),
    )
}

/// A group name the admin API accepts (and a path-derived route can produce).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Parses an address the way the config does (`host:port`, resolved now).
fn parse_addr(text: &str) -> Result<SocketAddr, Response> {
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        Ok(_) => Err(Response::error(400, format!("`{text}` needs a port"))),
        Err(_) => {
            use std::net::ToSocketAddrs;
            text.to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .filter(|a| a.port() != 0)
                .ok_or_else(|| {
                    Response::error(400, format!("`{text}` is not an address (host:port)"))
                })
        }
    }
}

/// Runs `change` on a copy of the config in force and applies the result like a
/// reload; answers `ok` with the new generation, or the error.
fn apply(
    state: &Rc<RefCell<State>>,
    change: impl FnOnce(&mut Config) -> Result<(), Response>,
    ok: impl FnOnce(u64) -> Response,
) -> Response {
    let mut config = state.borrow().config.clone();
    if let Err(resp) = change(&mut config) {
        return resp;
    }
    match state
        .borrow_mut()
        .reload_and_log(Source::Registry(Box::new(config)))
    {
        Ok(r) => ok(r.generation),
        Err(e) => Response::error(422, e.to_string()),
    }
}

/// `POST /upstreams/NAME/servers`.
fn add(state: &Rc<RefCell<State>>, name: &str, body: &[u8]) -> Response {
    if !valid_name(name) {
        return Response::error(
            400,
            format!("`{name}` is not a group name (letters, digits, `-_.`)"),
        );
    }
    let new: NewServer = match serde_json::from_slice(body) {
        Ok(n) => n,
        Err(e) => return Response::error(400, format!("body: {e} (expected {{\"addr\": \"host:port\", \"weight\": 1, \"backup\": false}})")),
    };
    let addr = match parse_addr(&new.addr) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    if !(1..=1000).contains(&new.weight) {
        return Response::error(
            400,
            format!("weight must be between 1 and 1000, got {}", new.weight),
        );
    }
    let max_connections = match new.max_connections {
        None => None,
        Some(m) if (1..=1_000_000).contains(&m) => Some(m as u32),
        Some(m) => {
            return Response::error(
                400,
                format!("max_connections must be between 1 and 1000000, got {m}"),
            )
        }
    };
    let server = Server {
        addr,
        weight: new.weight as u32,
        max_connections,
        backup: new.backup,
    };
    let shown =
        json!({ "addr": addr.to_string(), "weight": server.weight, "backup": server.backup });
    let created = std::cell::Cell::new(false);
    apply(
        state,
        |config| match config.upstreams.iter_mut().find(|u| u.name == name) {
            Some(group) if group.servers.iter().any(|s| s.addr == addr) => Err(Response::error(
                409,
                format!("{addr} is a server of `{name}` already"),
            )),
            Some(group) => {
                group.servers.push(server);
                Ok(())
            }
            None if new.backup => Err(Response::error(
                409,
                format!("`{name}` is new: its first server cannot be a backup"),
            )),
            None => {
                // Appended, not sorted in: routes refer to groups by position.
                config
                    .upstreams
                    .push(crate::config::Upstream::with_defaults(name, server));
                created.set(true);
                Ok(())
            }
        },
        |generation| {
            Response::json(
                201,
                json!({
                    "upstream": name,
                    "created_upstream": created.get(),
                    "server": shown,
                    "generation": generation,
                    "persisted": false,
                }),
            )
        },
    )
}

/// `DELETE /upstreams/NAME/servers/ADDR`.
fn remove(state: &Rc<RefCell<State>>, name: &str, addr: &str) -> Response {
    let addr = match parse_addr(addr) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    apply(
        state,
        |config| {
            let Some(group) = config.upstreams.iter_mut().find(|u| u.name == name) else {
                return Err(Response::error(404, format!("no upstream `{name}`")));
            };
            let Some(pos) = group.servers.iter().position(|s| s.addr == addr) else {
                return Err(Response::error(
                    404,
                    format!("{addr} is not a server of `{name}`"),
                ));
            };
            let left_primary = group
                .servers
                .iter()
                .enumerate()
                .any(|(i, s)| i != pos && !s.backup);
            if !left_primary {
                return Err(Response::error(
                    409,
                    format!("`{name}` would have no server left that is not a backup: add another first"),
                ));
            }
            group.servers.remove(pos);
            Ok(())
        },
        |generation| {
            Response::json(
                200,
                json!({
                    "upstream": name,
                    "addr": addr.to_string(),
                    "state": "draining",
                    "generation": generation,
                    "persisted": false,
                }),
            )
        },
    )
}

/// `POST /upstreams/NAME/servers/ADDR/down` or `/up`.
fn mark(state: &Rc<RefCell<State>>, name: &str, addr: &str, down: bool) -> Response {
    let addr = match parse_addr(addr) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let s = state.borrow();
    let id = s
        .snapshot
        .groups
        .iter()
        .filter(|g| g.upstream.name == name)
        .flat_map(|g| g.members.iter().zip(&g.upstream.servers))
        .find(|(_, srv)| srv.addr == addr)
        .map(|(m, _)| m.id);
    let Some(id) = id else {
        return Response::error(404, format!("{addr} is not a server of `{name}`"));
    };
    let shown = s.health.borrow_mut().set_manual(id, down, Instant::now());
    match shown {
        Some(h) => Response::json(
            200,
            json!({
                "upstream": name,
                "addr": addr.to_string(),
                "state": h.word(),
                "persisted": false,
            }),
        ),
        None => Response::error(404, format!("{addr} is not a server of `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A80"), "[::1]:80");
        assert_eq!(percent_decode("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn group_names_are_plain() {
        assert!(valid_name("svc-v1") && valid_name("web_2.eu"));
        assert!(!valid_name("") && !valid_name("a b") && !valid_name("a/b"));
    }
}
