//! The downstream side of a connection: the client stream (plain TCP or TLS) and the
//! facts about the connection that the request path needs (who the peer is, which
//! listener it came in on, and so the worker).
//!
//! Every read from a client goes through [`ClientStream`], including the fast paths
//! (readiness wait, one non-blocking read): no code outside this file touches the
//! socket's descriptor, so an encrypted stream can never be read as plaintext. A TLS
//! stream takes no plaintext fast path: its bytes come through the TLS session.

use crate::buf::{Buf, Fill};
use crate::shard::Shard;
use crate::tls::TlsStream;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

/// The URL scheme a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https` (for `X-Forwarded-Proto`, `Forwarded: proto=` and `$scheme`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One worker's listener, as every connection accepted on it sees it.
#[derive(Debug)]
pub struct Listener {
    /// The worker it belongs to.
    pub shard: Rc<Shard>,
    /// Its bound address (what its role in a generation is looked up by).
    pub addr: SocketAddr,
}

/// Facts about one client connection, alive exactly as long as the connection: made at
/// accept, they count it as open on its worker until dropped (a drain waits for zero).
///
/// The worker is reached through the listener rather than held beside it: this struct
/// is part of what every idle connection costs.
#[derive(Debug)]
pub struct ConnFacts {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener it came in on (shared by that listener's connections).
    listener: Rc<Listener>,
}

impl ConnFacts {
    /// Facts for a connection from `peer` accepted on `listener`, counted as open.
    pub fn new(peer: SocketAddr, listener: Rc<Listener>) -> ConnFacts {
        listener.shard.conn_opened();
        ConnFacts { peer, listener }
    }

    /// The worker serving the connection.
    pub fn shard(&self) -> &Shard {
        &self.listener.shard
    }

    /// The listener it came in on.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }
}

impl Drop for ConnFacts {
    fn drop(&mut self) {
        self.listener.shard.conn_closed();
    }
}

/// A client connection's byte stream.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, its handshake done (boxed: the session is large, and this enum is part of
    /// what every idle plain connection costs).
    Tls(Box<TlsStream<rustls::ServerConnection>>),
}

impl ClientStream {
    /// The scheme requests on this connection use.
    pub fn scheme(&self) -> Scheme {
        match self {
            ClientStream::Plain(_) => Scheme::Http,
            ClientStream::Tls(_) => Scheme::Https,
        }
    }

    /// Waits until the socket has something to read (or closed), without taking a
    /// buffer: an idle keep-alive connection costs no buffer memory while it waits.
    /// Check [`ClientStream::has_buffered`] first: a TLS session may hold bytes already.
    ///
    /// The socket's own readiness future, not an `async fn` around it: this future is
    /// part of what every idle connection costs.
    pub fn readable(&mut self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        let socket = match self {
            ClientStream::Plain(s) => &*s,
            ClientStream::Tls(t) => t.socket(),
        };
        socket.readable(false)
    }

    /// True when a read would find bytes without waiting for the socket (decrypted or
    /// undecrypted bytes held by a TLS session); always false for plain TCP.
    pub fn has_buffered(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(t) => t.has_buffered(),
        }
    }

    /// Gives back per-connection buffers while the connection idles (TLS only: a plain
    /// stream holds none).
    pub fn shed(&mut self) {
        if let ClientStream::Tls(t) = self {
            t.shed();
        }
    }

    /// Reads what the client has sent right now into `buf` with one non-blocking
    /// `recv`, growing it up to `max` unconsumed bytes; `Ok(None)` when nothing is there.
    ///
    /// For a stream just reported readable: one syscall instead of another trip through
    /// the ring, which would cost a whole event-loop turn of latency. A TLS stream
    /// always answers `Ok(None)`: its bytes must go through the session.
    pub fn fill_now(&mut self, buf: &mut Buf, max: usize) -> io::Result<Option<Fill>> {
        match self {
            ClientStream::Tls(_) => Ok(None),
            ClientStream::Plain(s) => {
                use std::os::fd::AsRawFd;
                let fd = s.as_raw_fd();
                buf.fill_now(max, |spare| {
                    // SAFETY: `spare` is writable memory of `spare.len()` bytes; recv
                    // writes at most that many and reports how many it wrote. `fd`
                    // belongs to `s`, which outlives this call.
                    let n = unsafe {
                        libc::recv(
                            fd,
                            spare.as_mut_ptr().cast(),
                            spare.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
            }
        }
    }
}

impl AsyncReadRent for ClientStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(t) => t.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.readv(buf).await,
            ClientStream::Tls(t) => t.readv(buf).await,
        }
    }
}

impl CancelableAsyncReadRent for ClientStream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.cancelable_read(buf, c).await,
            ClientStream::Tls(t) => t.cancelable_read(buf, c).await,
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.cancelable_readv(buf, c).await,
            ClientStream::Tls(t) => t.cancelable_readv(buf, c).await,
        }
    }
}

impl AsyncWriteRent for ClientStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write(buf).await,
            ClientStream::Tls(t) => t.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.writev(buf).await,
            ClientStream::Tls(t) => t.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush().await,
            ClientStream::Tls(t) => t.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(t) => t.shutdown().await,
        }
    }
}

// SAFETY: both variants are `Split` (a TCP socket; a TLS stream whose reads never
// write, see `tls::stream`), and the enum adds no shared state of its own.
unsafe impl monoio::io::Split for ClientStream {}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(timer_enabled = true)]
    async fn fill_now_reads_what_is_there_without_waiting() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut stream = ClientStream::Plain(TcpStream::from_std(s).unwrap());
        let mut b = Buf::with_capacity(16);
        assert_eq!(stream.fill_now(&mut b, 1024).unwrap(), None, "nothing yet");
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        stream.readable().await.unwrap();
        assert_eq!(stream.fill_now(&mut b, 1024).unwrap(), Some(Fill::Read(16)));
        assert_eq!(b.data(), b"GET / HTTP/1.1\r\n");
        drop(c);
        stream.readable().await.unwrap();
        assert_eq!(stream.fill_now(&mut b, 1024).unwrap(), Some(Fill::Eof));
    }
}
