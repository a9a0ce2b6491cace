//! How a connection starts when its listener asks for more than TCP: a PROXY protocol
//! header from a trusted balancer, then (or only) a TLS handshake; then [`serve`].
//! Runs on the connection's own task; a connection that fails here is closed and
//! counted, never answered.

use super::serve;
use crate::client::{ClientStream, ConnFacts};

/// Serves a connection accepted on a `proxy_protocol` listener: only from a trusted
/// balancer (`trusted_proxies`), and only after a valid PROXY header (v1 or v2, within
/// `header_timeout`), whose client address then stands for the peer everywhere
/// (`$remote_addr`, `X-Forwarded-For`, `allow` / `deny`, rate-limit keys). Anything
/// else is closed and counted. Then TLS (when the listener has it) and [`serve`].
pub async fn serve_proxied(
    stream: monoio::net::TcpStream,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    mut facts: ConnFacts,
) {
    let shard = facts.shard();
    let gen = shard.generation();
    let server = &gen.snap().server;
    let trusted = server
        .trusted_proxies
        .iter()
        .any(|c| c.contains(facts.peer.ip()));
    let header = match trusted {
        true => {
            let read = read_proxy_header(&stream);
            shard.timers().timeout(server.header_timeout, read).await
        }
        false => None,
    };
    let Some(Ok(header)) = header else {
        shard.proxy_header_refused();
        return;
    };
    if let Some(client) = header.source {
        facts.peer = client;
    }
    drop(gen);
    match tls {
        None => serve(ClientStream::Plain(stream), facts).await,
        Some(config) => serve_tls(stream, config, facts).await,
    }
}

/// Reads a PROXY header off `stream`, leaving the client's own bytes unread: it peeks
/// until the whole header is there, then takes exactly its length.
async fn read_proxy_header(
    stream: &monoio::net::TcpStream,
) -> std::io::Result<crate::proxy_protocol::Header> {
    use crate::proxy_protocol::{parse, Invalid, MAX_HEADER};
    use std::os::fd::AsRawFd;
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    // On the heap and only for the header's time: it is no part of what a connection
    // costs once it serves requests.
    let mut buf = vec![0u8; MAX_HEADER].into_boxed_slice();
    let fd = stream.as_raw_fd();
    loop {
        stream.readable(false).await?;
        // SAFETY: `buf` is writable for its length; `fd` belongs to `stream`, which
        // outlives the call; MSG_DONTWAIT never parks the worker.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let n = match n {
            0 => return Err(invalid("closed before a PROXY header")),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => continue,
                    _ => return Err(e),
                }
            }
            n => n as usize,
        };
        match parse(&buf[..n]) {
            Ok(h) => {
                // SAFETY: as above; the `h.len` bytes were just peeked, so this takes
                // exactly them.
                let took =
                    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), h.len, libc::MSG_DONTWAIT) };
                return match took == h.len as isize {
                    true => Ok(h),
                    false => Err(invalid("PROXY header not taken whole")),
                };
            }
            // Readiness stays set while the partial header sits there: wait a moment.
            Err(Invalid::Incomplete) if n < MAX_HEADER => {
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(Invalid::Incomplete) => return Err(invalid("PROXY header too long")),
            Err(Invalid::Bad(m)) => return Err(invalid(m)),
        }
    }
}

/// Serves a connection accepted on a TLS listener: the handshake (within
/// `header_timeout`), then [`serve`]. A client that fails it is counted and closed.
pub async fn serve_tls(
    stream: monoio::net::TcpStream,
    config: std::sync::Arc<rustls::ServerConfig>,
    facts: ConnFacts,
) {
    let shard = facts.shard();
    let Ok(session) = rustls::ServerConnection::new(config) else {
        shard.tls_handshake(false);
        return;
    };
    let mut tls = Box::new(crate::tls::TlsStream::new(stream, session));
    let timeout = shard.generation().snap().server.header_timeout;
    let done = shard.timers().timeout(timeout, tls.handshake()).await;
    shard.tls_handshake(matches!(done, Some(Ok(()))));
    if matches!(done, Some(Ok(()))) {
        serve(ClientStream::Tls(tls), facts).await;
    }
}
