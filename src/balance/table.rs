//! `Group`: one upstream group's balancing table, built once per snapshot on the control
//! thread and shared read-only by every worker: member ids, per-worker connection
//! limits, the largest weight, and the ketama ring for `consistent_hash`.

use crate::config::{Balance, Upstream};
use crate::hash::hash_bytes;
use crate::upstream::ServerId;

/// Ring points per server of average weight (ketama's choice): enough that removing
/// one of N servers moves close to 1/N of the keys.
const RING_POINTS: u64 = 160;

/// One server of a group, by position in `Upstream::servers`.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its stable id.
    pub id: ServerId,
    /// Relative weight.
    pub weight: u64,
    /// Used only when no primary can take the request.
    pub backup: bool,
    /// This worker's share of `max_connections`; `u32::MAX` when unlimited.
    pub limit: u32,
}

/// A group's table: its settings, its members, and what picks precompute.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's settings and servers as configured.
    pub upstream: Upstream,
    /// Members, aligned with `upstream.servers`.
    pub members: Vec<Member>,
    /// Largest configured weight (scaled by 100, as weights are when ramping).
    pub max_weight: u64,
    /// Ketama ring of (point, position) over primary servers, sorted by point; empty
    /// unless the policy is `consistent_hash`.
    pub ring: Vec<(u64, u32)>,
    /// Some member is a backup.
    pub has_backup: bool,
}

impl Group {
    /// Builds the table; `ids` are the members' ids in server order.
    pub fn new(upstream: Upstream, ids: &[ServerId], workers: usize) -> Group {
        let workers = workers.max(1) as u32;
        let members: Vec<Member> = upstream
            .servers
            .iter()
            .zip(ids)
            .map(|(s, &id)| Member {
                id,
                weight: u64::from(s.weight),
                backup: s.backup,
                limit: s.max_connections.map_or(u32::MAX, |m| m.div_ceil(workers)),
            })
            .collect();
        Group {
            max_weight: members.iter().map(|m| m.weight * 100).max().unwrap_or(100),
            ring: if upstream.balance == Balance::ConsistentHash {
                ring(&upstream)
            } else {
                Vec::new()
            },
            has_backup: members.iter().any(|m| m.backup),
            members,
            upstream,
        }
    }
}

/// Ketama ring over the group's primary servers, points placed by address so every
/// worker (and every restart) builds the same ring whatever the server order.
fn ring(group: &Upstream) -> Vec<(u64, u32)> {
    let primaries: Vec<usize> = (0..group.servers.len())
        .filter(|&p| !group.servers[p].backup)
        .collect();
    let total: u64 = primaries
        .iter()
        .map(|&p| u64::from(group.servers[p].weight))
        .sum();
    let mut ring = Vec::new();
    for &pos in &primaries {
        let s = &group.servers[pos];
        let points =
            (RING_POINTS * primaries.len() as u64 * u64::from(s.weight) / total.max(1)).max(1);
        let name = s.addr.to_string();
        for i in 0..points {
            let mut label = Vec::with_capacity(name.len() + 8);
            label.extend_from_slice(name.as_bytes());
            label.push(b'-');
            label.extend_from_slice(i.to_string().as_bytes());
            ring.push((hash_bytes(&label), pos as u32));
        }
    }
    ring.sort_unstable();
    ring
}
