//! `Snapshot`: everything workers run that derives from the config, immutable and built
//! off the hot path (by the control thread on reload, by the main thread at start).
//!
//! Published to every worker through the bus as an `Arc` and swapped in at the
//! worker's next tick; each request takes the current one once and finishes on it, so
//! a reload never changes the rules under a request in flight. Servers carry their
//! stable [`ServerId`] from the [`Registry`], so per-worker state survives the swap.

use crate::balance::Group;
use crate::config::{Config, Listen, ServerConfig, UpstreamId};
use crate::route::Router;
use crate::upstream::{Registry, ServerId};
use std::net::SocketAddr;
use std::sync::Arc;

/// One config generation, ready to run.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the config the process started with, +1 per successful reload.
    pub generation: u64,
    /// Where the config came from (file path), for messages.
    pub origin: String,
    /// `[server]` settings: limits, timeouts, global header edits.
    pub server: ServerConfig,
    /// Upstream groups with their balancing tables, indexed like `Config::upstreams`.
    pub groups: Vec<Group>,
    /// Route matching.
    pub router: Router,
    /// Groups by name, for routes that take the group's name from the path.
    group_ids: crate::hash::FnvMap<UpstreamId>,
    /// Some header edit uses `$request_id`: every request then gets an id.
    pub request_ids: bool,
    /// Workers count requests for `GET /metrics`.
    pub metrics: bool,
    /// The access log's format, when it is on.
    pub access: Option<crate::config::AccessFormat>,
    /// Each route's label in metrics, in route order, then `none` (no route matched).
    pub route_labels: Vec<String>,
    /// `[cache]`: limits and defaults of the response cache.
    pub cache: crate::config::CacheConfig,
    /// What each bound listener does beyond plain HTTP (see [`Snapshot::with_listeners`]).
    pub listeners: Vec<ListenerRole>,
    /// The port of the first TLS listener, for `redirect_https`.
    pub https_port: Option<u16>,
}

/// A bound listener's role in one generation: looked up at each accept, so a reload
/// changes certificates (or turns TLS on or off) without rebinding.
#[derive(Debug, Clone)]
pub struct ListenerRole {
    /// The bound address (real port).
    pub addr: SocketAddr,
    /// Handshakes use this; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Every request is answered 308 to `https://` (`[server] redirect_https`).
    pub redirect_https: bool,
    /// Connections start with a PROXY protocol header (from a trusted balancer).
    pub proxy_protocol: bool,
}

impl Snapshot {
    /// Builds generation `generation` of `config`, giving each server its id.
    pub fn build(config: &Config, generation: u64, registry: &mut Registry) -> Snapshot {
        let workers = config.server.workers;
        let groups = config
            .upstreams
            .iter()
            .map(|u| {
                let ids: Vec<ServerId> = u
                    .servers
                    .iter()
                    .map(|s| registry.id(&u.name, s.addr))
                    .collect();
                Group::new(u.clone(), &ids, workers)
            })
            .collect();
        Snapshot {
            generation,
            origin: config.origin.clone(),
            server: config.server.clone(),
            group_ids: config
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| (u.name.clone(), i))
                .collect(),
            groups,
            router: Router::new(config),
            request_ids: config.request_ids,
            metrics: config.metrics(),
            access: config.log.access.as_ref().map(|_| config.log.format),
            route_labels: config
                .routes
                .iter()
                .map(|r| r.label.clone())
                .chain(std::iter::once("none".to_string()))
                .collect(),
            cache: config.cache.clone(),
            listeners: Vec::new(),
            https_port: None,
        }
    }

    /// Sets each bound listener's role from the config's listen entries; `listening`
    /// pairs each entry with its bound address.
    pub fn with_listeners(mut self, listening: &[(Listen, SocketAddr)]) -> Snapshot {
        self.listeners = listening
            .iter()
            .map(|(l, addr)| ListenerRole {
                addr: *addr,
                tls: self.server.tls_of(l).map(|t| t.config.clone()),
                redirect_https: self.server.redirect_https == Some(*l),
                proxy_protocol: self.server.proxy_protocol.contains(l),
            })
            .collect();
        self.https_port = self
            .listeners
            .iter()
            .find(|r| r.tls.is_some())
            .map(|r| r.addr.port());
        self
    }

    /// The role of the listener bound at `addr` (plain HTTP when unknown).
    pub fn listener(&self, addr: SocketAddr) -> Option<&ListenerRole> {
        self.listeners.iter().find(|r| r.addr == addr)
    }

    /// Group names in group order, for metrics labels.
    pub fn group_names(&self) -> Vec<&str> {
        self.groups
            .iter()
            .map(|g| g.upstream.name.as_str())
            .collect()
    }

    /// The group named `name`.
    pub fn group_id(&self, name: &str) -> Option<UpstreamId> {
        self.group_ids.get(name).copied()
    }

    /// Every server: its group's index, its id and its address.
    pub fn servers(&self) -> impl Iterator<Item = (usize, ServerId, SocketAddr)> + '_ {
        self.groups.iter().enumerate().flat_map(|(g, group)| {
            group
                .members
                .iter()
                .zip(&group.upstream.servers)
                .map(move |(m, s)| (g, m.id, s.addr))
        })
    }

    /// `upstream `web` server 127.0.0.1:9001`, for logs; `None` for an unknown id.
    pub fn describe(&self, id: ServerId) -> Option<String> {
        self.servers()
            .find(|&(_, s, _)| s == id)
            .map(|(g, _, addr)| {
                format!("upstream `{}` server {addr}", self.groups[g].upstream.name)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &str) -> Config {
        Config::parse(
            &format!("[upstreams.web]\nservers = [{servers}]\n[upstreams.api]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"web\"\n"),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn kept_servers_keep_their_ids_across_generations() {
        let mut reg = Registry::new();
        let one = Snapshot::build(&config("\"127.0.0.1:1\", \"127.0.0.1:2\""), 1, &mut reg);
        let two = Snapshot::build(&config("\"127.0.0.1:3\", \"127.0.0.1:2\""), 2, &mut reg);
        let id = |s: &Snapshot, port: u16| {
            s.servers()
                .find(|&(_, _, a)| a.port() == port)
                .map(|(_, id, _)| id)
                .unwrap()
        };
        assert_eq!(id(&one, 2), id(&two, 2), "moved in the list, same server");
        assert_ne!(id(&two, 3), id(&one, 1), "a new server gets a new id");
        assert_eq!(
            two.describe(id(&two, 2)).as_deref(),
            Some("upstream `web` server 127.0.0.1:2")
        );
        assert_eq!(two.generation, 2);
    }
}
