//! A tunnel: after the upstream answered an Upgrade request with `101 Switching
//! Protocols` (and only then), the client and upstream connections are joined and
//! bytes flow both ways, unparsed, until both sides closed or neither sent anything
//! for `tunnel_idle_timeout`. Runs on the connection's task, after the 101 was written
//! and the request was logged; the connection ends with it.
//!
//! A tunnel is counted apart from requests: on its worker (`ringway_tunnels_*`) and on
//! its server (`least_conn`, `p2c` and `max_connections` see it as load). A reload
//! leaves it alone; a drain gives it until `shutdown_timeout`, like any connection.

use super::Conn;
use crate::upstream::pool::UpConn;
use crate::upstream::ServerLocal;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes read per turn in each direction (a WebSocket frame is often far smaller; a
/// bulk transfer gets full TLS records).
const TUNNEL_BUF: usize = 16 * 1024;

/// An upgraded upstream connection waiting to be joined to its client.
#[derive(Debug)]
pub(super) struct Tunnel {
    /// The connection that answered 101 (with any bytes it sent after the head).
    pub up: UpConn,
    /// Its server, which counts the tunnel as load while it is open.
    pub server: Rc<ServerLocal>,
}

/// Counts a tunnel as open on its worker and its server while alive.
struct Open<'a> {
    shard: &'a crate::shard::Shard,
    server: &'a ServerLocal,
}

impl<'a> Open<'a> {
    fn new(shard: &'a crate::shard::Shard, server: &'a ServerLocal) -> Open<'a> {
        shard.tunnel(true);
        server.tunnel(true);
        Open { shard, server }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.shard.tunnel(false);
        self.server.tunnel(false);
    }
}

/// Joins the client to the upgraded upstream connection until both close or the
/// tunnel idles out; the client connection is done afterwards.
pub(super) async fn run(c: &mut Conn<'_>, t: Tunnel, idle: Duration) {
    let Tunnel { mut up, server } = t;
    let shard = c.shard;
    let _open = Open::new(shard, &server);
    // Bytes that came with the heads: the client's after its request head (it may
    // speak first), the upstream's after the 101.
    if !c.cbuf.is_empty() {
        let early = c.cbuf.data().to_vec();
        c.cbuf.consume(early.len());
        if up.stream.write_all(early).await.0.is_err() {
            return;
        }
    }
    if !up.buf.is_empty() {
        let early = up.buf.data().to_vec();
        up.buf.consume(early.len());
        c.bytes_out += early.len() as u64;
        if c.client.write_all(early).await.0.is_err() {
            return;
        }
    }
    let last = Cell::new(shard.now());
    let (sent, received) = (Cell::new(0u64), Cell::new(0u64));
    // SAFETY (both `Half` pairs): each stream is `Split` (its reads and writes are
    // independent, see `client` and `tls::stream`), the halves live only inside this
    // function, and each half is used by one direction only.
    let (client_r, client_w) = unsafe { Half::pair(&mut *c.client) };
    let (up_r, up_w) = unsafe { Half::pair(&mut up.stream) };
    // The upstream decides when the session is over (a WebSocket server closes first,
    // RFC 6455 §7.1.1): its close ends the tunnel. A client that closes its side may
    // still be waiting for the rest of the answer, so that only half-closes upstream.
    let to_up = async {
        pump(client_r, up_w, &last, shard, &sent).await;
        std::future::pending::<()>().await
    };
    let to_client = pump(up_r, client_w, &last, shard, &received);
    let watchdog = idle_watch(&last, shard, idle);
    monoio::select! {
        _ = to_client => {}
        _ = to_up => {}
        _ = watchdog => {}
    }
    c.bytes_in += sent.get();
    c.bytes_out += received.get();
}

/// Ends when nothing moved either way for `idle`.
async fn idle_watch(last: &Cell<Instant>, shard: &crate::shard::Shard, idle: Duration) {
    loop {
        let seen = last.get();
        let pending = std::future::pending::<()>();
        let _ = shard.timers().timeout_at(seen + idle, pending).await;
        if last.get() == seen {
            return;
        }
    }
}

/// Copies `src` to `dst` until `src` ends (then half-closes `dst`) or either fails,
/// adding the bytes copied to `moved`. Each read or write that moves bytes marks `last`.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    mut src: R,
    mut dst: W,
    last: &Cell<Instant>,
    shard: &crate::shard::Shard,
    moved: &Cell<u64>,
) {
    let mut buf = Vec::with_capacity(TUNNEL_BUF);
    loop {
        buf.clear();
        let (res, b) = src.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                last.set(shard.now());
                let (res, b) = dst.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    return;
                }
                moved.set(moved.get() + n as u64);
                last.set(shard.now());
            }
        }
    }
    // A TLS stream sends close_notify first.
    let _ = dst.shutdown().await;
}

/// One direction's view of a stream that both directions of a tunnel use at once.
struct Half<T> {
    stream: *mut T,
}

impl<T: AsyncReadRent + AsyncWriteRent + monoio::io::Split> Half<T> {
    /// Two handles on `stream`: one to read, one to write.
    ///
    /// # Safety
    /// The caller uses one handle only for reads and the other only for writes, and
    /// drops both before `stream`'s borrow ends.
    unsafe fn pair(stream: &mut T) -> (Half<T>, Half<T>) {
        let p: *mut T = stream;
        (Half { stream: p }, Half { stream: p })
    }
}

impl<T: AsyncReadRent> AsyncReadRent for Half<T> {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        // SAFETY: see `Half::pair`; `T: Split` makes a read concurrent with a write on
        // the other handle sound.
        unsafe { &mut *self.stream }.read(buf).await
    }

    async fn readv<B: monoio::buf::IoVecBufMut>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        // SAFETY: as in `read`.
        unsafe { &mut *self.stream }.readv(buf).await
    }
}

impl<T: AsyncWriteRent> AsyncWriteRent for Half<T> {
    async fn write<B: IoBuf>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        // SAFETY: as in `read`.
        unsafe { &mut *self.stream }.write(buf).await
    }

    async fn writev<B: monoio::buf::IoVecBuf>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        // SAFETY: as in `read`.
        unsafe { &mut *self.stream }.writev(buf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        // SAFETY: as in `read`.
        unsafe { &mut *self.stream }.flush().await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        // SAFETY: as in `read`.
        unsafe { &mut *self.stream }.shutdown().await
    }
}
