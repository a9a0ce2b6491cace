//! The byte stream of an upstream connection: plain TCP, or TLS for a group with
//! `tls` (the handshake done when the connection opened). Pooled like any other
//! connection; runs on the worker that owns it.

use crate::tls::TlsStream;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::io;
use std::mem::MaybeUninit;

/// An upstream connection's stream.
#[derive(Debug)]
pub enum UpStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: the session is large, and most upstreams are plain).
    Tls(Box<TlsStream<rustls::ClientConnection>>),
}

impl UpStream {
    /// For a connection taken from the pool: false when the upstream closed it (or sent
    /// something, which an idle HTTP connection must not) while it sat idle. One
    /// non-blocking syscall; a TLS stream also takes in what the server sent meanwhile
    /// (session tickets, a close_notify).
    pub fn looks_alive(&mut self) -> bool {
        match self {
            UpStream::Plain(s) => plain_alive(s),
            UpStream::Tls(t) => t.idle_check(),
        }
    }
}

/// True unless a non-blocking peek shows the upstream closed (or reset) the socket.
fn plain_alive(stream: &TcpStream) -> bool {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    let mut byte = [MaybeUninit::uninit(); 1];
    // MSG_DONTWAIT: under io_uring the socket itself is blocking, and a plain peek on a
    // healthy idle connection would park the whole worker until the upstream speaks.
    match sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        // Data on an idle connection is a protocol error; EOF means closed.
        Ok(_) => false,
    }
}

impl AsyncReadRent for UpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.read(buf).await,
            UpStream::Tls(t) => t.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.readv(buf).await,
            UpStream::Tls(t) => t.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.write(buf).await,
            UpStream::Tls(t) => t.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpStream::Plain(s) => s.writev(buf).await,
            UpStream::Tls(t) => t.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            UpStream::Plain(s) => s.flush().await,
            UpStream::Tls(t) => t.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            UpStream::Plain(s) => s.shutdown().await,
            UpStream::Tls(t) => t.shutdown().await,
        }
    }
}

// SAFETY: both variants are `Split` (a TCP socket; a TLS stream whose reads never
// write, see `tls::stream`), and the enum adds no shared state of its own.
unsafe impl monoio::io::Split for UpStream {}
