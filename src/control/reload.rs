//! Reload: read and validate a config, refuse what needs a restart, bind new listen
//! addresses, build the next snapshot and publish it (with the listener changes) to
//! every worker. A config that fails anywhere before publishing changes nothing: the
//! running generation keeps serving, and the error names the file, line and key.

use super::State;
use crate::access::Sink;
use crate::bus::{Handoff, Update};
use crate::config::{AccessTarget, Config, ConfigError, Listen};
use crate::listen::{self, ListenError};
use crate::snapshot::Snapshot;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Where a reload's config comes from.
#[derive(Debug)]
pub enum Source {
    /// The file the running config came from (SIGHUP, the admin API).
    File(PathBuf),
    /// A config built in process (tests).
    Config(Box<Config>),
    /// The config in force changed by the admin API's registry (not written to a file).
    Registry(Box<Config>),
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// One line saying what changed.
    pub summary: String,
    /// Listen addresses now bound (real ports).
    pub listening: Vec<SocketAddr>,
    /// The new config's `[server] shutdown_timeout`.
    pub shutdown_timeout: std::time::Duration,
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A change that needs a restart.
    #[error("{origin}: `{key}`: {message}")]
    NeedsRestart {
        /// The file.
        origin: String,
        /// The key.
        key: &'static str,
        /// What changed.
        message: String,
    },
    /// A new listen address could not be bound.
    #[error("{origin}: `server.listen`: {source}")]
    Listen {
        /// The file.
        origin: String,
        /// The bind error.
        source: ListenError,
    },
    /// A new access log file could not be opened.
    #[error("{origin}: `log.access`: cannot open {path}: {source}")]
    AccessLog {
        /// The file.
        origin: String,
        /// The access log's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The control thread is gone (the proxy is stopping).
    #[error("the proxy is stopping")]
    Stopping,
}

impl State {
    /// Reloads from `source`: publishes the next generation, or changes nothing.
    pub(super) fn reload(&mut self, source: Source) -> Result<Reloaded, ReloadError> {
        let mut config = match source {
            Source::File(path) => Config::load(&path)?,
            Source::Config(c) | Source::Registry(c) => *c,
        };
        if let Some(w) = self.workers_override {
            config.server.workers = w;
        }
        let running = self.config.server.workers;
        if config.server.workers != running {
            return Err(ReloadError::NeedsRestart {
                origin: config.origin.clone(),
                key: "server.workers",
                message: format!(
                    "cannot change from {running} to {} without a restart",
                    config.server.workers
                ),
            });
        }
        let admin = |c: &Config| c.admin.as_ref().map(|a| a.listen);
        if admin(&config) != admin(&self.config) {
            return Err(ReloadError::NeedsRestart {
                origin: config.origin.clone(),
                key: "admin.listen",
                message: "the admin listener cannot move or be added or removed without a restart"
                    .into(),
            });
        }
        let sink = match config.log.access != self.config.log.access {
            false => None,
            true => Some(Sink::open(config.log.access.as_ref()).map_err(|source| {
                ReloadError::AccessLog {
                    origin: config.origin.clone(),
                    path: match &config.log.access {
                        Some(AccessTarget::File(p)) => p.display().to_string(),
                        _ => "stdout".into(),
                    },
                    source,
                }
            })?),
        };
        let (mut added, removed) = self.bind_new_listeners(&config)?;
        let summary = describe_changes(&self.config, &config, &added, &removed);
        let generation = self.snapshot.generation + 1;
        let mut listening = self.listening.clone();
        listening.retain(|(l, _)| !removed.iter().any(|(r, _)| r == l));
        listening.extend(added.iter().map(|b| (b.listen, b.addr)));
        let snap = Snapshot::build(&config, generation, &mut self.registry);
        let snap = Arc::new(snap.with_listeners(&listening));
        // The snapshot goes first: a listener handed over below finds its role (TLS,
        // redirect) in it at its first accept.
        self.bus.broadcast(Update::Snapshot(snap.clone()));
        if !added.is_empty() || !removed.is_empty() {
            let per_worker = transpose(
                added.iter_mut().map(|b| std::mem::take(&mut b.sockets)),
                running,
            );
            self.bus.broadcast(Update::Listen {
                add: Arc::new(Handoff::new(per_worker)),
                remove: removed.iter().map(|(_, a)| *a).collect(),
            });
        }
        if let Some(sink) = sink {
            self.access.retarget(sink);
        }
        crate::log::set_level(config.log.level.into());
        self.listening = listening;
        let now = Instant::now();
        self.health.borrow_mut().sync(&snap, now);
        self.checks.sync(&snap, &self.health);
        let shutdown_timeout = config.server.shutdown_timeout;
        self.cache
            .configure(config.caching(), config.cache.max_bytes);
        self.config = config;
        self.snapshot = snap;
        Ok(Reloaded {
            generation,
            summary,
            listening: self.listening.iter().map(|(_, a)| *a).collect(),
            shutdown_timeout,
        })
    }

    /// Binds the listen entries `config` adds; returns them with the entries it drops.
    fn bind_new_listeners(&self, config: &Config) -> Result<ListenChanges, ReloadError> {
        let wanted = &config.server.listen;
        let removed: Vec<(Listen, SocketAddr)> = self
            .listening
            .iter()
            .filter(|(l, _)| !wanted.contains(l))
            .copied()
            .collect();
        let mut added = Vec::new();
        for l in wanted {
            if self.listening.iter().any(|(have, _)| have == l) {
                continue;
            }
            // Bound sockets that are dropped here (a later entry failed) just close.
            let bound =
                listen::bind(*l, config.server.workers).map_err(|source| ReloadError::Listen {
                    origin: config.origin.clone(),
                    source,
                })?;
            added.push(bound);
        }
        Ok((added, removed))
    }
}

/// Listen entries a reload adds (bound) and drops (with their bound address).
type ListenChanges = (Vec<listen::Bound>, Vec<(Listen, SocketAddr)>);

/// Per-address socket sets (one socket per worker each) into per-worker sets.
fn transpose(
    sets: impl Iterator<Item = Vec<std::net::TcpListener>>,
    workers: usize,
) -> Vec<Vec<std::net::TcpListener>> {
    let mut out: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for set in sets {
        for (w, s) in set.into_iter().enumerate() {
            out[w].push(s);
        }
    }
    out
}

/// One line saying what a reload changes: routes, upstreams, servers, settings,
/// listeners; `no changes` when nothing does.
pub fn describe_changes(
    old: &Config,
    new: &Config,
    added: &[listen::Bound],
    removed: &[(Listen, SocketAddr)],
) -> String {
    let mut parts = Vec::new();
    let (old_routes, new_routes) = (format!("{:?}", old.routes), format!("{:?}", new.routes));
    if old.routes.len() != new.routes.len() {
        parts.push(format!(
            "routes {} → {}",
            old.routes.len(),
            new.routes.len()
        ));
    } else if old_routes != new_routes {
        parts.push("routes changed".to_string());
    }
    let names =
        |c: &Config| -> BTreeSet<String> { c.upstreams.iter().map(|u| u.name.clone()).collect() };
    let (before, after) = (names(old), names(new));
    for n in after.difference(&before) {
        parts.push(format!("upstream `{n}` added"));
    }
    for n in before.difference(&after) {
        parts.push(format!("upstream `{n}` removed"));
    }
    let (mut gained, mut lost, mut retuned) = (Vec::new(), Vec::new(), Vec::new());
    for (name, o, n) in new
        .upstreams
        .iter()
        .filter_map(|n| old.upstream(&n.name).map(|(_, o)| (&n.name, o, n)))
    {
        let addrs = |u: &crate::config::Upstream| -> BTreeSet<SocketAddr> {
            u.servers.iter().map(|s| s.addr).collect()
        };
        let (a, b) = (addrs(o), addrs(n));
        gained.extend(b.difference(&a).map(|s| format!("{name} {s}")));
        lost.extend(a.difference(&b).map(|s| format!("{name} {s}")));
        let settings = |u: &crate::config::Upstream| {
            let mut u = u.clone();
            u.servers.clear();
            format!("{u:?}")
        };
        let weights_changed = b == a && o.servers != n.servers;
        if settings(o) != settings(n) || weights_changed {
            retuned.push(format!("`{name}`"));
        }
    }
    if !gained.is_empty() {
        parts.push(format!("servers added: {}", gained.join(", ")));
    }
    if !lost.is_empty() {
        parts.push(format!("servers removed: {}", lost.join(", ")));
    }
    if !retuned.is_empty() {
        parts.push(format!(
            "settings changed in upstream {}",
            retuned.join(", ")
        ));
    }
    let server_settings = |c: &Config| {
        let mut s = c.server.clone();
        s.listen.clear();
        format!("{s:?}")
    };
    if server_settings(old) != server_settings(new) {
        parts.push("[server] settings changed".to_string());
    }
    for b in added {
        parts.push(format!("listening on {} added", b.addr));
    }
    for (_, a) in removed {
        parts.push(format!("listening on {a} removed"));
    }
    if parts.is_empty() {
        "no changes".to_string()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(servers: &str, routes: &str) -> Config {
        Config::parse(
            &format!(
                "[upstreams.web]\nservers = [{servers}]\n{routes}[[routes]]\nupstream = \"web\"\n"
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn the_summary_names_what_changed() {
        let a = config("\"127.0.0.1:1\", \"127.0.0.1:2\"", "");
        assert_eq!(describe_changes(&a, &a, &[], &[]), "no changes");
        let b = config(
            "\"127.0.0.1:2\", \"127.0.0.1:3\"",
            "[[routes]]\npath_prefix = \"/api\"\nupstream = \"web\"\n",
        );
        assert_eq!(
            describe_changes(&a, &b, &[], &[]),
            "routes 1 → 2; servers added: web 127.0.0.1:3; servers removed: web 127.0.0.1:1"
        );
        let c = config(
            "{ addr = \"127.0.0.1:1\", weight = 5 }, \"127.0.0.1:2\"",
            "",
        );
        assert_eq!(
            describe_changes(&a, &c, &[], &[]),
            "settings changed in upstream `web`"
        );
    }
}
