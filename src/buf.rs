//! `Buf`: a connection's reusable read buffer, and the owned-buffer I/O helpers that
//! monoio's completion-based API needs (buffers move into the kernel and back).
//!
//! Unconsumed bytes are `vec[start..]`. Heads are parsed straight out of it, bodies
//! are written to the other side straight from it: no copy for pass-through data.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};
use std::io;

/// Fewer free bytes than this at the end triggers compaction or growth before a read.
const MIN_READ: usize = 2048;
/// A client connection's buffers start at this size: most request heads fit, and a
/// connection that goes idle gives them back anyway (see `proxy`).
pub const CLIENT_BUF: usize = 4096;

/// A read buffer with a consumed prefix.
#[derive(Debug, Default)]
pub struct Buf {
    vec: Vec<u8>,
    start: usize,
}

/// Outcome of `Buf::fill`.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// This many new bytes arrived.
    Read(usize),
    /// The peer closed its side.
    Eof,
    /// The buffer already holds `max` unconsumed bytes.
    Full,
}

impl Buf {
    /// An empty buffer with `capacity` bytes allocated now.
    pub fn with_capacity(capacity: usize) -> Buf {
        Buf {
            vec: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.vec[self.start..]
    }

    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.vec.len() - self.start
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `n` bytes as used; they are dropped lazily.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len(), "consumed more than buffered");
        self.start += n.min(self.len());
        if self.start == self.vec.len() {
            self.vec.clear();
            self.start = 0;
        }
    }

    /// Drops every buffered byte, keeping the memory.
    pub fn clear(&mut self) {
        self.vec.clear();
        self.start = 0;
    }

    /// Bytes of memory held.
    pub fn capacity(&self) -> usize {
        self.vec.capacity()
    }

    /// Makes free space at the end for a read: compacts the consumed prefix away, then
    /// grows (doubling, at most to `max`) when little space is left.
    fn make_room(&mut self, max: usize) {
        if self.vec.capacity() - self.vec.len() >= MIN_READ {
            return;
        }
        if self.start > 0 {
            self.vec.drain(..self.start);
            self.start = 0;
        }
        let spare = self.vec.capacity() - self.vec.len();
        if spare < MIN_READ && self.vec.capacity() < max {
            let want = self
                .vec
                .capacity()
                .max(MIN_READ)
                .min(max - self.vec.capacity());
            self.vec.reserve_exact(want.max(1));
        }
    }

    /// Reads more bytes from `src`, growing up to `max` unconsumed bytes.
    ///
    /// If the future is dropped mid-read the buffer is lost (the kernel still owns
    /// it); callers drop the connection in that case, so that is harmless.
    pub async fn fill<S: AsyncReadRent>(&mut self, src: &mut S, max: usize) -> io::Result<Fill> {
        let Some((start, vec, used)) = self.lend(max) else {
            return Ok(Fill::Full);
        };
        let cap = vec.capacity();
        let (res, slice) = src.read(vec.slice_mut(used..cap)).await;
        self.restore(start, slice.into_inner(), res)
    }

    /// As [`Buf::fill`], but the read can be called off through `cancel`: it then ends
    /// with `ECANCELED`, unless bytes arrived first, which are kept like any others.
    pub async fn fill_cancelable<S: CancelableAsyncReadRent>(
        &mut self,
        src: &mut S,
        max: usize,
        cancel: CancelHandle,
    ) -> io::Result<Fill> {
        let Some((start, vec, used)) = self.lend(max) else {
            return Ok(Fill::Full);
        };
        let cap = vec.capacity();
        let (res, slice) = src.cancelable_read(vec.slice_mut(used..cap), cancel).await;
        self.restore(start, slice.into_inner(), res)
    }

    /// Makes room and takes the vector out for the kernel: `(start, vec, used)`, or
    /// `None` when `max` bytes are already buffered.
    fn lend(&mut self, max: usize) -> Option<(usize, Vec<u8>, usize)> {
        if self.len() >= max {
            return None;
        }
        self.make_room(max);
        let start = std::mem::replace(&mut self.start, 0);
        let vec = std::mem::take(&mut self.vec);
        let used = vec.len();
        debug_assert!(vec.capacity() > used, "fill reserved no space");
        Some((start, vec, used))
    }

    /// Puts the vector back after a read and reports it.
    fn restore(&mut self, start: usize, vec: Vec<u8>, res: io::Result<usize>) -> io::Result<Fill> {
        self.vec = vec;
        self.start = start;
        match res? {
            0 => Ok(Fill::Eof),
            n => Ok(Fill::Read(n)),
        }
    }

    /// Reads what a socket has right now with one non-blocking call, growing up to `max`
    /// unconsumed bytes; `Ok(None)` when nothing is there.
    ///
    /// `read` is handed the spare capacity and returns how many bytes it wrote there
    /// (0: end of stream), or `WouldBlock`. The caller owns the socket: this keeps raw
    /// descriptors out of the buffer (`client::ClientStream` decides what may be read).
    pub fn fill_now(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize>,
    ) -> io::Result<Option<Fill>> {
        if self.len() >= max {
            return Ok(Some(Fill::Full));
        }
        self.make_room(max);
        let spare = self.vec.spare_capacity_mut();
        let room = spare.len();
        match read(spare) {
            Ok(0) => Ok(Some(Fill::Eof)),
            Ok(n) => {
                assert!(
                    n <= room,
                    "a read reported more bytes than it was given room for"
                );
                // SAFETY: `read` initialized the first `n` spare bytes (checked above
                // to be within the spare capacity).
                unsafe { self.vec.set_len(self.vec.len() + n) };
                Ok(Some(Fill::Read(n)))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the first `n` unconsumed bytes to `dst` and consumes them.
    pub async fn write_prefix<D: AsyncWriteRent>(
        &mut self,
        dst: &mut D,
        n: usize,
    ) -> io::Result<()> {
        self.write_range(dst, 0, n).await?;
        self.consume(n);
        Ok(())
    }

    /// Writes unconsumed bytes `from..from + n` to `dst` without consuming them.
    pub async fn write_range<D: AsyncWriteRent>(
        &mut self,
        dst: &mut D,
        from: usize,
        n: usize,
    ) -> io::Result<()> {
        assert!(from + n <= self.len(), "write_range beyond buffered data");
        if n == 0 {
            return Ok(());
        }
        let start = std::mem::replace(&mut self.start, 0);
        let vec = std::mem::take(&mut self.vec);
        let (res, slice) = dst
            .write_all(vec.slice(start + from..start + from + n))
            .await;
        self.vec = slice.into_inner();
        self.start = start;
        res.map(|_| ())
    }
}

/// A client connection's buffers: requests read in, heads written out.
#[derive(Debug)]
pub struct ConnBufs {
    /// Bytes read from the client and not yet handled.
    pub cbuf: Buf,
    /// Scratch for heads and re-framed bodies on their way out.
    pub out: Vec<u8>,
    /// The current request's access log fields (empty while the access log is off:
    /// it allocates only once the log is on).
    pub log: Vec<u8>,
    /// The current request's cache key, host and target (empty while no route caches).
    pub key: Vec<u8>,
}

/// A worker's free connection buffers, so a connection holds buffers only while busy
/// and taking them costs no allocation in steady state.
#[derive(Debug)]
pub struct BufPool {
    free: std::cell::RefCell<Vec<ConnBufs>>,
    size: usize,
    max_free: usize,
}

impl BufPool {
    /// A pool handing out buffers of `size` bytes, keeping at most `max_free` idle sets.
    pub fn new(size: usize, max_free: usize) -> BufPool {
        BufPool {
            free: std::cell::RefCell::new(Vec::new()),
            size,
            max_free,
        }
    }

    /// A free set, or a new one.
    pub fn take(&self) -> ConnBufs {
        self.free.borrow_mut().pop().unwrap_or_else(|| ConnBufs {
            cbuf: Buf::with_capacity(self.size),
            out: Vec::with_capacity(self.size),
            log: Vec::new(),
            key: Vec::new(),
        })
    }

    /// Returns a set; one that grew for a large head is dropped rather than kept.
    pub fn give(&self, mut bufs: ConnBufs) {
        let mut free = self.free.borrow_mut();
        let oversized = bufs.cbuf.capacity() > 4 * self.size || bufs.out.capacity() > 4 * self.size;
        if free.len() < self.max_free && !oversized {
            bufs.cbuf.clear();
            bufs.out.clear();
            free.push(bufs);
        }
    }
}

/// Writes all of `out` to `dst`, then clears it (keeping its capacity).
pub async fn write_vec<D: AsyncWriteRent>(dst: &mut D, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let vec = std::mem::take(out);
    let (res, mut vec) = dst.write_all(vec).await;
    vec.clear();
    *out = vec;
    res.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_resets_when_drained() {
        let mut b = Buf::with_capacity(16);
        b.vec.extend_from_slice(b"hello");
        b.consume(2);
        assert_eq!(b.data(), b"llo");
        b.consume(3);
        assert!(b.is_empty());
        assert_eq!(b.start, 0);
    }

    #[monoio::test]
    async fn fill_appends_and_compacts() {
        let mut src: &[u8] = b"abcdefgh";
        let mut b = Buf::with_capacity(4);
        assert_eq!(b.fill(&mut src, 64).await.unwrap(), Fill::Read(8));
        b.consume(6);
        let mut more: &[u8] = b"XY";
        assert_eq!(b.fill(&mut more, 64).await.unwrap(), Fill::Read(2));
        assert_eq!(b.data(), b"ghXY");
        let mut empty: &[u8] = b"";
        assert_eq!(b.fill(&mut empty, 64).await.unwrap(), Fill::Eof);
        assert_eq!(b.fill(&mut empty, 4).await.unwrap(), Fill::Full);
    }
}
