//! The downstream side of a connection: the client stream (plain TCP today; TLS adds a
//! variant) and the facts about the connection that the request path needs (who the
//! peer is, which listener it came in on, and so the scheme and the worker).
//!
//! Every read from a client goes through [`ClientStream`], including the fast paths
//! (readiness wait, one non-blocking read): no code outside this file touches the
//! socket's descriptor, so an encrypted stream can never be read as plaintext.

use crate::buf::{Buf, Fill};
use crate::shard::Shard;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

/// The URL scheme a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
}

impl Scheme {
    /// `http` (for `X-Forwarded-Proto`, `Forwarded: proto=` and `$scheme`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
        }
    }
}

/// One worker's listener, as every connection accepted on it sees it.
#[derive(Debug)]
pub struct Listener {
    /// The worker it belongs to.
    pub shard: Rc<Shard>,
    /// Its bound address.
    pub addr: SocketAddr,
    /// What it serves.
    pub scheme: Scheme,
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

    /// The scheme requests on this connection use.
    pub fn scheme(&self) -> Scheme {
        self.listener.scheme
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
}

impl ClientStream {
    /// Waits until the client sent something (or closed), without taking a buffer:
    /// an idle keep-alive connection costs no buffer memory while it waits.
    ///
    /// The socket's own readiness future, not an `async fn` around it: this future is
    /// part of what every idle connection costs.
    pub fn readable(&mut self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        match self {
            ClientStream::Plain(s) => s.readable(false),
        }
    }

    /// Reads what the client has sent right now into `buf` with one non-blocking
    /// `recv`, growing it up to `max` unconsumed bytes; `Ok(None)` when nothing is there.
    ///
    /// For a stream just reported readable: one syscall instead of another trip through
    /// the ring, which would cost a whole event-loop turn of latency.
    pub fn fill_now(&mut self, buf: &mut Buf, max: usize) -> io::Result<Option<Fill>> {
        match self {
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
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.readv(buf).await,
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
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.cancelable_readv(buf, c).await,
        }
    }
}

impl AsyncWriteRent for ClientStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientStream::Plain(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
        }
    }
}

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
