//! Binding the proxy's listeners: for each `listen` address, one `SO_REUSEPORT` socket
//! per worker, so every worker accepts on its own socket and the kernel spreads
//! connections between them. Called by the main thread at start and by the control
//! thread on a reload that adds an address; never on a worker.
//!
//! The first socket of a set is bound to the configured address and the rest to its
//! real address, so `port 0` gets one free port for all workers.

use crate::config::Listen;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

/// Listen backlog per socket; SYN floods beyond this are the kernel's problem.
const BACKLOG: i32 = 4096;

/// One listen address, bound once per worker.
#[derive(Debug)]
pub struct Bound {
    /// The entry as configured.
    pub listen: Listen,
    /// The real address (port 0 resolved).
    pub addr: SocketAddr,
    /// One socket per worker, in worker order.
    pub sockets: Vec<std::net::TcpListener>,
    /// How the address is served, for the log (`IPv4 and IPv6`, ...).
    pub note: &'static str,
}

/// Why an address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The address as configured.
    pub addr: String,
    /// The OS error.
    pub source: io::Error,
}

/// Binds `listen` once per worker.
pub fn bind(listen: Listen, workers: usize) -> Result<Bound, ListenError> {
    let fail = |source| ListenError {
        addr: listen.to_string(),
        source,
    };
    let (first, note) = if listen.all_interfaces {
        match bind_one(listen.addr, false, true) {
            Ok(s) => (s, "all interfaces, IPv6 and IPv4"),
            Err(e) if no_ipv6(&e) => {
                let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, listen.addr.port()));
                let s = bind_one(v4, true, true).map_err(fail)?;
                (s, "all interfaces, IPv4 only: no IPv6 here")
            }
            Err(e) => return Err(fail(e)),
        }
    } else {
        (bind_one(listen.addr, true, true).map_err(fail)?, "")
    };
    let addr = first.local_addr().map_err(fail)?;
    let v6_only = !listen.all_interfaces;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(bind_one(addr, v6_only, false).map_err(fail)?);
    }
    Ok(Bound {
        listen,
        addr,
        sockets,
        note,
    })
}

/// The error a host without IPv6 gives for an IPv6 socket.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// One listening socket on `addr`; `v6_only` for explicit IPv6 addresses (as nginx's
/// `ipv6only=on` default), off for the dual-stack `:port` form. `probe`: first check
/// that no other socket listens there (only for the first socket of a set).
fn bind_one(addr: SocketAddr, v6_only: bool, probe: bool) -> io::Result<std::net::TcpListener> {
    if probe && addr.port() != 0 {
        // A plain bind first: SO_REUSEPORT would silently share a port that some
        // other process already listens on, stealing part of its traffic.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            probe.set_only_v6(v6_only)?;
        }
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt here instead of one
    // per connection. Small responses must not wait for Nagle's algorithm.
    socket.set_nodelay(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_one_port_for_every_worker() {
        let listen = Listen {
            addr: "127.0.0.1:0".parse().unwrap(),
            all_interfaces: false,
            tls: false,
        };
        let b = bind(listen, 3).unwrap();
        assert_ne!(b.addr.port(), 0);
        assert_eq!(b.sockets.len(), 3);
        for s in &b.sockets {
            assert_eq!(s.local_addr().unwrap(), b.addr);
        }
    }

    #[test]
    fn a_busy_port_is_refused_with_its_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = Listen {
            addr: taken.local_addr().unwrap(),
            all_interfaces: false,
            tls: false,
        };
        let e = bind(listen, 1).unwrap_err();
        assert!(e.to_string().contains(&listen.addr.to_string()), "{e}");
    }
}
