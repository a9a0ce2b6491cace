//! Streaming a message body from one connection to the other, by its framing.
//!
//! Content-Length bodies are written straight from the read buffer; chunked and
//! close-delimited bodies are decoded and re-framed for the receiving side. Memory is
//! bounded by the buffers, whatever the body size. A failure is reported as the
//! request failure it is, by which side failed ([`Direction`]).

use crate::buf::{write_vec, Buf, Fill};
use crate::error::ProxyError;
use crate::http::chunked::{write_chunk_header, ChunkedDecoder, Step, LAST_CHUNK};
use crate::http::Framing;
use crate::timer::Timers;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use std::time::Duration;

/// Re-framed output is flushed once this much has accumulated.
const FLUSH_AT: usize = 64 * 1024;

/// Which way a body goes, which says whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request body, client to upstream.
    Request,
    /// A response body, upstream to client (or to a health check's sink).
    Response,
}

impl Direction {
    /// The failure when the source stalls, closes early or breaks its framing.
    fn source_failed(self, bad_framing: bool) -> ProxyError {
        match (self, bad_framing) {
            (Direction::Request, true) => ProxyError::BadRequest("invalid chunked body"),
            (Direction::Request, false) => ProxyError::ClientGone,
            (Direction::Response, _) => ProxyError::ResponseAborted,
        }
    }

    /// The failure when the destination stops accepting bytes.
    fn destination_failed(self) -> ProxyError {
        match self {
            Direction::Request => ProxyError::UpstreamClosed,
            Direction::Response => ProxyError::ClientGone,
        }
    }
}

/// Receives a copy of a body as it is relayed: the cache storing a response.
pub trait Sink {
    /// The next bytes of the body (decoded: no chunk framing).
    fn data(&mut self, bytes: &[u8]);
    /// The body arrived whole and well framed; called before its last bytes are
    /// written on, so what it stores is in place before the receiver has the end.
    fn end(&mut self);
}

/// One direction of a body transfer.
pub struct Relay<'a, S, D> {
    /// Where the body comes from.
    pub src: &'a mut S,
    /// Bytes already read from `src` (the body starts at its front).
    pub buf: &'a mut Buf,
    /// Where the body goes.
    pub dst: &'a mut D,
    /// Scratch space for re-framed output.
    pub out: &'a mut Vec<u8>,
    /// Longest wait for the next bytes from `src`.
    pub read_timeout: Duration,
    /// Longest wait for `dst` to accept a write.
    pub write_timeout: Duration,
    /// Most bytes `buf` may hold.
    pub max_buf: usize,
    /// The worker's coarse timers, for both timeouts.
    pub timers: &'a Timers,
    /// Which way the body goes.
    pub dir: Direction,
    /// Gets a copy of the body, and is told when it ended well.
    pub tee: Option<&'a mut dyn Sink>,
    /// Most body bytes a chunked body may carry (`max_body_bytes`): beyond, the relay
    /// stops with `PayloadTooLarge`. A length body is checked before it is relayed.
    pub max_len: u64,
}

impl<S: AsyncReadRent, D: AsyncWriteRent> Relay<'_, S, D> {
    /// Copies one body framed as `input` on the source and as `output` on the destination;
    /// returns the bytes written to the destination (framing included).
    ///
    /// `output` is `Length` only when `input` is (same length), `Chunked` or `Close` otherwise.
    pub async fn run(&mut self, input: Framing, output: Framing) -> Result<u64, ProxyError> {
        match input {
            Framing::None => Ok(0),
            Framing::Length(n) => self.length(n).await,
            Framing::Chunked => self.chunked(output == Framing::Chunked).await,
            Framing::Close => self.until_close(output == Framing::Chunked).await,
        }
    }

    /// Reads more of the body; the source ending or stalling is its failure.
    async fn read(&mut self) -> Result<Fill, ProxyError> {
        let read = self.buf.fill(self.src, self.max_buf);
        match self.timers.timeout(self.read_timeout, read).await {
            Some(Ok(f)) => Ok(f),
            Some(Err(_)) | None => Err(self.dir.source_failed(false)),
        }
    }

    /// Like [`Relay::read`], where the body must go on: end of stream is a failure.
    async fn read_more(&mut self, full_is_framing: bool) -> Result<(), ProxyError> {
        match self.read().await? {
            Fill::Read(_) => Ok(()),
            Fill::Eof => Err(self.dir.source_failed(false)),
            // A length body is drained before each read, so only a chunk line that
            // never ends fills the buffer.
            Fill::Full => Err(self.dir.source_failed(full_is_framing)),
        }
    }

    /// Writes the re-framed output; returns its length.
    async fn flush(&mut self) -> Result<u64, ProxyError> {
        let n = self.out.len() as u64;
        let write = write_vec(self.dst, self.out);
        match self.timers.timeout(self.write_timeout, write).await {
            Some(Ok(())) => Ok(n),
            Some(Err(_)) | None => Err(self.dir.destination_failed()),
        }
    }

    /// Writes the first `n` buffered bytes as they are; returns `n`.
    async fn write_buffered(&mut self, n: usize) -> Result<u64, ProxyError> {
        let write = self.buf.write_prefix(self.dst, n);
        match self.timers.timeout(self.write_timeout, write).await {
            Some(Ok(())) => Ok(n as u64),
            Some(Err(_)) | None => Err(self.dir.destination_failed()),
        }
    }

    async fn length(&mut self, mut remaining: u64) -> Result<u64, ProxyError> {
        let mut moved = 0;
        loop {
            let n = usize::try_from(remaining).map_or(self.buf.len(), |r| r.min(self.buf.len()));
            if n > 0 {
                if let Some(tee) = self.tee.as_deref_mut() {
                    tee.data(&self.buf.data()[..n]);
                    if n as u64 == remaining {
                        tee.end();
                    }
                }
                moved += self.write_buffered(n).await?;
                remaining -= n as u64;
            }
            if remaining == 0 {
                return Ok(moved);
            }
            self.read_more(false).await?;
        }
    }

    async fn chunked(&mut self, rechunk: bool) -> Result<u64, ProxyError> {
        let mut dec = ChunkedDecoder::new();
        let mut moved = 0;
        let mut data_len = 0u64;
        loop {
            loop {
                let step = dec.decode(self.buf.data());
                match step.map_err(|_| self.dir.source_failed(true))? {
                    Step::Data { start, end } => {
                        data_len += (end - start) as u64;
                        if data_len > self.max_len {
                            return Err(ProxyError::PayloadTooLarge);
                        }
                        if let Some(tee) = self.tee.as_deref_mut() {
                            tee.data(&self.buf.data()[start..end]);
                        }
                        if rechunk {
                            write_chunk_header(self.out, end - start);
                        }
                        self.out.extend_from_slice(&self.buf.data()[start..end]);
                        if rechunk {
                            self.out.extend_from_slice(b"\r\n");
                        }
                        self.buf.consume(end);
                        if self.out.len() >= FLUSH_AT {
                            moved += self.flush().await?;
                        }
                    }
                    Step::NeedMore { consumed } => {
                        self.buf.consume(consumed);
                        break;
                    }
                    Step::Done { consumed } => {
                        self.buf.consume(consumed);
                        if let Some(tee) = self.tee.as_deref_mut() {
                            tee.end();
                        }
                        if rechunk {
                            self.out.extend_from_slice(LAST_CHUNK);
                        }
                        return Ok(moved + self.flush().await?);
                    }
                }
            }
            moved += self.flush().await?;
            self.read_more(true).await?;
        }
    }

    async fn until_close(&mut self, rechunk: bool) -> Result<u64, ProxyError> {
        let mut moved = 0;
        loop {
            let n = self.buf.len();
            if n > 0 {
                if let Some(tee) = self.tee.as_deref_mut() {
                    tee.data(self.buf.data());
                }
                if rechunk {
                    write_chunk_header(self.out, n);
                    self.out.extend_from_slice(self.buf.data());
                    self.out.extend_from_slice(b"\r\n");
                    self.buf.consume(n);
                    moved += self.flush().await?;
                } else {
                    moved += self.write_buffered(n).await?;
                }
            }
            match self.read().await? {
                Fill::Read(_) => {}
                Fill::Eof => {
                    if let Some(tee) = self.tee.as_deref_mut() {
                        tee.end();
                    }
                    break;
                }
                // Drained before each read: the buffer cannot fill up.
                Fill::Full => return Err(self.dir.source_failed(false)),
            }
        }
        if rechunk {
            self.out.extend_from_slice(LAST_CHUNK);
            moved += self.flush().await?;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::buf::{IoBuf, IoVecBuf};
    use monoio::BufResult;
    use std::io;

    /// A source that hands out at most `step` bytes per read, like a slow peer.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncReadRent for Trickle<'_> {
        async fn read<T: monoio::buf::IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            let mut part = &self.data[..self.step.min(self.data.len())];
            let (res, buf) = part.read(buf).await;
            if let Ok(n) = res {
                self.data = &self.data[n..];
            }
            (res, buf)
        }

        async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            (Err(io::Error::other("readv unused")), buf)
        }
    }

    /// A sink collecting everything written.
    #[derive(Default)]
    struct Sink(Vec<u8>);

    impl AsyncWriteRent for Sink {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            // SAFETY: an IoBuf guarantees `bytes_init` readable bytes at `read_ptr`.
            let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            self.0.extend_from_slice(bytes);
            (Ok(bytes.len()), buf)
        }

        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            (Err(io::Error::other("writev unused")), buf)
        }

        async fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }

        async fn shutdown(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A tee that records what it is given, and when it is told the body ended.
    #[derive(Default)]
    struct Copy {
        data: Vec<u8>,
        /// Bytes written to the destination when `end` came.
        ended_at: Option<usize>,
    }

    impl super::Sink for Copy {
        fn data(&mut self, bytes: &[u8]) {
            self.data.extend_from_slice(bytes);
        }

        fn end(&mut self) {
            self.ended_at = Some(self.data.len());
        }
    }

    async fn relay(
        input: &[u8],
        step: usize,
        from: Framing,
        to: Framing,
    ) -> (Result<u64, ProxyError>, Vec<u8>, Vec<u8>) {
        let mut tee = Copy::default();
        relay_teed(input, step, from, to, &mut tee).await
    }

    async fn relay_teed(
        input: &[u8],
        step: usize,
        from: Framing,
        to: Framing,
        tee: &mut Copy,
    ) -> (Result<u64, ProxyError>, Vec<u8>, Vec<u8>) {
        let mut src = Trickle { data: input, step };
        let mut buf = Buf::with_capacity(64);
        let mut sink = Sink::default();
        let mut out = Vec::new();
        let timers = Timers::default();
        let mut r = Relay {
            src: &mut src,
            buf: &mut buf,
            dst: &mut sink,
            out: &mut out,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_buf: 4096,
            max_len: u64::MAX,
            timers: &timers,
            dir: Direction::Request,
            tee: Some(tee),
        };
        let res = r.run(from, to).await;
        (res, sink.0, buf.data().to_vec())
    }

    #[monoio::test(timer_enabled = true)]
    async fn length_bodies_pass_through_and_leave_the_next_message() {
        for step in [1, 3, 100] {
            let (res, got, left) = relay(
                b"hello worldNEXT",
                step,
                Framing::Length(11),
                Framing::Length(11),
            )
            .await;
            res.unwrap();
            assert_eq!(got, b"hello world");
            assert!(b"NEXT".starts_with(&left), "step {step}: left {left:?}");
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn chunked_bodies_are_reframed_or_decoded() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for step in [1, 2, 7, 1000] {
            let (res, got, _) = relay(input, step, Framing::Chunked, Framing::Chunked).await;
            res.unwrap();
            let mut dec = Vec::new();
            let mut d = crate::http::chunked::ChunkedDecoder::new();
            let mut rest = &got[..];
            loop {
                match d.decode(rest).unwrap() {
                    Step::Data { start, end } => {
                        dec.extend_from_slice(&rest[start..end]);
                        rest = &rest[end..];
                    }
                    Step::Done { consumed } => {
                        assert_eq!(consumed, rest.len(), "nothing after the last chunk");
                        break;
                    }
                    Step::NeedMore { .. } => panic!("re-framed output is incomplete"),
                }
            }
            assert_eq!(dec, b"hello world", "step {step}");
            assert!(
                !got.windows(3).any(|w| w == b"ext"),
                "extensions are not forwarded"
            );
            assert!(
                !got.windows(7).any(|w| w == b"Trailer"),
                "trailers are not forwarded"
            );
            let (res, got, _) = relay(input, step, Framing::Chunked, Framing::Close).await;
            res.unwrap();
            assert_eq!(got, b"hello world");
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn close_delimited_bodies_become_chunked_for_http11() {
        let (res, got, _) = relay(b"abc", 2, Framing::Close, Framing::Chunked).await;
        res.unwrap();
        assert_eq!(got, b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_tee_gets_the_decoded_body_and_its_end_only_when_it_ended_well() {
        let cases: [(&[u8], Framing); 3] = [
            (b"hello world", Framing::Length(11)),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Framing::Chunked),
            (b"hello world", Framing::Close),
        ];
        for (input, framing) in cases {
            for step in [1, 4, 100] {
                let mut tee = Copy::default();
                let (res, _, _) = relay_teed(input, step, framing, framing, &mut tee).await;
                res.unwrap();
                assert_eq!(tee.data, b"hello world", "{framing:?} step {step}");
                assert_eq!(tee.ended_at, Some(11), "{framing:?} step {step}");
            }
        }
        for (input, framing) in [
            (&b"hello"[..], Framing::Length(11)),
            (b"5\r\nhello\r\n6\r\n wor", Framing::Chunked),
        ] {
            let mut tee = Copy::default();
            let (res, _, _) = relay_teed(input, 3, framing, framing, &mut tee).await;
            assert!(res.is_err());
            assert_eq!(
                tee.ended_at, None,
                "a cut body never ends well: {framing:?}"
            );
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn truncated_and_malformed_bodies_are_errors() {
        // A request body: the client's fault, told apart by what went wrong.
        let (res, _, _) = relay(b"hello", 2, Framing::Length(10), Framing::Length(10)).await;
        assert_eq!(res, Err(ProxyError::ClientGone));
        let (res, _, _) = relay(b"5\r\nhel", 2, Framing::Chunked, Framing::Chunked).await;
        assert_eq!(res, Err(ProxyError::ClientGone));
        let (res, _, _) = relay(b"zz\r\n", 2, Framing::Chunked, Framing::Chunked).await;
        assert_eq!(res, Err(ProxyError::BadRequest("invalid chunked body")));
    }
}
