//! A TLS session over a monoio TCP stream: rustls' buffered `Connection` API driven by
//! owned-buffer reads and writes on the ring. Used for clients on a TLS listener
//! (server side) and for upstreams with `tls` (client side); runs on the worker that
//! owns the connection.
//!
//! Why not monoio-rustls: its stream hides the socket and the session, so an idle
//! connection could not wait for readability without holding a read buffer, a pooled
//! upstream connection could not be checked for a close while idle, and nothing could
//! tell whether decrypted bytes are already waiting. Here those are methods.
//!
//! Reads never write: alerts, key-update answers and session tickets queued while
//! reading go out with the next write (or at the end of the handshake). That keeps the
//! read and write paths independent, so a stream can be split for a tunnel.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::{ConnectionCommon, SideData};
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};

/// Ciphertext read from the socket per read: one full TLS record and its header.
const READ_SIZE: usize = 16 * 1024 + 512;

/// A TLS session `C` (a rustls `ServerConnection` or `ClientConnection`) on a socket.
#[derive(Debug)]
pub struct TlsStream<C> {
    io: TcpStream,
    session: C,
    /// Ciphertext read and not yet taken by the session (`rpos..`): rustls takes at
    /// most what its buffers allow per call.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Ciphertext on its way out (reused).
    wbuf: Vec<u8>,
}

impl<C, SD> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// A stream whose handshake has yet to run ([`TlsStream::handshake`]).
    pub fn new(io: TcpStream, session: C) -> TlsStream<C> {
        TlsStream {
            io,
            session,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        }
    }

    /// The rustls session (negotiated protocol, SNI, ALPN).
    pub fn session(&self) -> &C {
        &self.session
    }

    /// The socket under the session (for readiness waits and peeks, never for data).
    pub fn socket(&self) -> &TcpStream {
        &self.io
    }

    /// Runs the handshake to its end, writing what it queued. The caller bounds it in time.
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.session.is_handshaking() {
            if self.session.wants_write() {
                self.flush_tls().await?;
            } else if self.session.wants_read() {
                if self.read_tls(None).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during the TLS handshake",
                    ));
                }
            } else {
                break;
            }
        }
        // The server's last flight (and TLS 1.3 session tickets) or the client's Finished.
        self.flush_tls().await
    }

    /// True when decrypted bytes (or a clean close) wait in the session, or ciphertext
    /// waits in the read buffer: a reader need not wait for the socket.
    pub fn has_buffered(&mut self) -> bool {
        if self.rpos < self.rbuf.len() {
            return true;
        }
        // Nothing new to process: this only reports the session's state. An error
        // counts as buffered too: the next read reports it.
        match self.session.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true,
        }
    }

    /// For an idle (pooled) connection: takes in, without waiting, what the peer sent
    /// since (TLS 1.3 session tickets, a close_notify); true while it may still carry
    /// a request: nothing but handshake messages arrived and the peer did not close.
    pub fn idle_check(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        if self.rpos < self.rbuf.len() {
            // Undelivered ciphertext: a response nobody asked for.
            return false;
        }
        let fd = self.io.as_raw_fd();
        let mut tmp = [0u8; 2048];
        loop {
            // SAFETY: `tmp` is writable for its length; `fd` belongs to `self.io`,
            // which outlives the call. MSG_DONTWAIT: never park the worker.
            let n =
                unsafe { libc::recv(fd, tmp.as_mut_ptr().cast(), tmp.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
            }
            let Some(mut data) = tmp.get(..n as usize).filter(|d| !d.is_empty()) else {
                return false;
            };
            while !data.is_empty() {
                if self.session.read_tls(&mut data).is_err() {
                    return false;
                }
                match self.session.process_new_packets() {
                    Ok(s) if s.plaintext_bytes_to_read() == 0 && !s.peer_has_closed() => {}
                    _ => return false,
                }
            }
        }
    }

    /// Gives back the read and write buffers while the connection is idle; the next
    /// read or write takes new ones.
    pub fn shed(&mut self) {
        if self.rpos >= self.rbuf.len() {
            self.rbuf = Vec::new();
            self.rpos = 0;
        }
        self.wbuf = Vec::new();
    }

    /// Reads decrypted bytes into `dst`; `Ok(0)` at a clean close (close_notify, or a
    /// TCP close the peer's TLS allows).
    async fn read_plain(
        &mut self,
        dst: &mut [u8],
        cancel: Option<&CancelHandle>,
    ) -> io::Result<usize> {
        loop {
            match self.session.reader().read(dst) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.read_tls(cancel).await?;
        }
    }

    /// Feeds the session from the read buffer, reading the socket first when the buffer
    /// is empty; returns the bytes read from the socket (0: it closed).
    async fn read_tls(&mut self, cancel: Option<&CancelHandle>) -> io::Result<usize> {
        let mut got = 1;
        if self.rpos >= self.rbuf.len() {
            let mut buf = std::mem::take(&mut self.rbuf);
            buf.clear();
            buf.reserve(READ_SIZE);
            let (res, buf) = match cancel {
                Some(c) => {
                    monoio::io::CancelableAsyncReadRent::cancelable_read(
                        &mut self.io,
                        buf,
                        c.clone(),
                    )
                    .await
                }
                None => self.io.read(buf).await,
            };
            self.rbuf = buf;
            self.rpos = 0;
            got = res?;
        }
        let mut data = &self.rbuf[self.rpos..];
        let before = data.len();
        loop {
            match self.session.read_tls(&mut data) {
                // An empty slice reads as end of stream: the session notes the close.
                Ok(0) => break,
                Ok(_) => {}
                // Decrypted bytes wait to be read: keep the rest of the ciphertext.
                Err(e) if e.kind() == io::ErrorKind::Other && !data.is_empty() => break,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.session.process_new_packets() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if data.is_empty() {
                break;
            }
        }
        self.rpos += before - data.len();
        Ok(got)
    }

    /// Writes everything the session has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            let mut buf = std::mem::take(&mut self.wbuf);
            buf.clear();
            self.session.write_tls(&mut buf)?;
            let (res, buf) = self.io.write_all(buf).await;
            self.wbuf = buf;
            res?;
        }
        Ok(())
    }

    /// Encrypts `src` (as much as the session takes) and writes it out.
    async fn write_plain(&mut self, src: &[u8]) -> io::Result<usize> {
        let n = self.session.writer().write(src)?;
        self.flush_tls().await?;
        Ok(n)
    }
}

/// The writable memory of `buf` as a slice.
fn spare<T: IoBufMut>(buf: &mut T) -> &mut [u8] {
    // SAFETY: `write_ptr` points at `bytes_total` bytes the buffer owns, valid while
    // `buf` is borrowed; they are only written (never read) before `set_init`.
    unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), buf.bytes_total()) }
}

impl<C, SD> AsyncReadRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let res = self.read_plain(spare(&mut buf), None).await;
        if let Ok(n) = res {
            // SAFETY: `read_plain` wrote `n` bytes at the start of the buffer.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // Into the first non-empty slice only: a short read is a valid read.
        let n = buf.write_iovec_len();
        let ptr = buf.write_iovec_ptr();
        for i in 0..n {
            // SAFETY: the buffer holds `n` valid iovecs at `ptr` while it is borrowed.
            let iov = unsafe { *ptr.add(i) };
            if iov.iov_len == 0 {
                continue;
            }
            // SAFETY: each iovec names writable memory the buffer owns.
            let dst = unsafe { std::slice::from_raw_parts_mut(iov.iov_base.cast(), iov.iov_len) };
            let res = self.read_plain(dst, None).await;
            if let Ok(got) = res {
                // SAFETY: `got` bytes were written from the start of the first slice.
                unsafe { buf.set_init(got) };
            }
            return (res, buf);
        }
        (Ok(0), buf)
    }
}

impl<C, SD> monoio::io::CancelableAsyncReadRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        mut buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        let res = self.read_plain(spare(&mut buf), Some(&c)).await;
        if let Ok(n) = res {
            // SAFETY: as in `read`.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        _c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.readv(buf).await
    }
}

impl<C, SD> AsyncWriteRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` points at `bytes_init` initialized bytes while `buf` lives.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.write_plain(src).await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let (ptr, n) = (buf.read_iovec_ptr(), buf.read_iovec_len());
        let mut took = 0;
        for i in 0..n {
            // SAFETY: the buffer holds `n` valid iovecs of initialized bytes.
            let part = unsafe {
                let iov = *ptr.add(i);
                std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len)
            };
            let k = match self.session.writer().write(part) {
                Ok(k) => k,
                Err(e) => return (Err(e), buf),
            };
            took += k;
            if k < part.len() {
                break;
            }
        }
        let res = self.flush_tls().await.map(|()| took);
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}

// SAFETY: a read touches the session only between awaits and never writes (see the
// module doc), and a write touches it only between awaits; the socket itself is
// `Split`. The read and write halves of a tunnel therefore never interleave inside a
// session call, and each owns its own buffer.
unsafe impl<C> monoio::io::Split for TlsStream<C> {}
