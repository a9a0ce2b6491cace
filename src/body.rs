//! Streaming a message body from one connection to the other, by its framing.
//!
//! Content-Length bodies are written straight from the read buffer; chunked and
//! close-delimited bodies are decoded and re-framed for the receiving side. Memory is
//! bounded by the buffers, whatever the body size.

use crate::buf::{write_vec, Buf, Fill};
use crate::http::chunked::{write_chunk_header, ChunkError, ChunkedDecoder, Step, LAST_CHUNK};
use crate::http::Framing;
use crate::timer::Timers;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use std::io;
use std::time::Duration;

/// Re-framed output is flushed once this much has accumulated.
const FLUSH_AT: usize = 64 * 1024;

/// Why a body relay stopped early; says which side failed so the caller can answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading from the source failed.
    #[error("read: {0}")]
    Read(io::Error),
    /// The source sent nothing within the read timeout.
    #[error("read timed out")]
    ReadTimeout,
    /// The source closed before the body was complete.
    #[error("source closed mid-body")]
    Eof,
    /// The source's chunked framing is invalid.
    #[error("chunked framing: {0}")]
    Framing(ChunkError),
    /// Writing to the destination failed.
    #[error("write: {0}")]
    Write(io::Error),
    /// The destination accepted nothing within the write timeout.
    #[error("write timed out")]
    WriteTimeout,
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
}

impl<S: AsyncReadRent, D: AsyncWriteRent> Relay<'_, S, D> {
    /// Copies one body framed as `input` on the source and as `output` on the destination.
    ///
    /// `output` is `Length` only when `input` is (same length), `Chunked` or `Close` otherwise.
    pub async fn run(&mut self, input: Framing, output: Framing) -> Result<(), RelayError> {
        match input {
            Framing::None => Ok(()),
            Framing::Length(n) => self.length(n).await,
            Framing::Chunked => self.chunked(output == Framing::Chunked).await,
            Framing::Close => self.until_close(output == Framing::Chunked).await,
        }
    }

    async fn read(&mut self) -> Result<Fill, RelayError> {
        let read = self.buf.fill(self.src, self.max_buf);
        match self.timers.timeout(self.read_timeout, read).await {
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => Err(RelayError::Read(e)),
            None => Err(RelayError::ReadTimeout),
        }
    }

    async fn flush(&mut self) -> Result<(), RelayError> {
        let write = write_vec(self.dst, self.out);
        match self.timers.timeout(self.write_timeout, write).await {
            Some(r) => r.map_err(RelayError::Write),
            None => Err(RelayError::WriteTimeout),
        }
    }

    async fn write_buffered(&mut self, n: usize) -> Result<(), RelayError> {
        let write = self.buf.write_prefix(self.dst, n);
        match self.timers.timeout(self.write_timeout, write).await {
            Some(r) => r.map_err(RelayError::Write),
            None => Err(RelayError::WriteTimeout),
        }
    }

    async fn length(&mut self, mut remaining: u64) -> Result<(), RelayError> {
        loop {
            let n = usize::try_from(remaining).map_or(self.buf.len(), |r| r.min(self.buf.len()));
            if n > 0 {
                self.write_buffered(n).await?;
                remaining -= n as u64;
            }
            if remaining == 0 {
                return Ok(());
            }
            match self.read().await? {
                Fill::Read(_) => {}
                Fill::Eof => return Err(RelayError::Eof),
                // Unreachable in practice: a length body is drained before each read.
                Fill::Full => return Err(RelayError::Read(io::Error::other("buffer full"))),
            }
        }
    }

    async fn chunked(&mut self, rechunk: bool) -> Result<(), RelayError> {
        let mut dec = ChunkedDecoder::new();
        loop {
            loop {
                match dec.decode(self.buf.data()).map_err(RelayError::Framing)? {
                    Step::Data { start, end } => {
                        if rechunk {
                            write_chunk_header(self.out, end - start);
                        }
                        self.out.extend_from_slice(&self.buf.data()[start..end]);
                        if rechunk {
                            self.out.extend_from_slice(b"\r\n");
                        }
                        self.buf.consume(end);
                        if self.out.len() >= FLUSH_AT {
                            self.flush().await?;
                        }
                    }
                    Step::NeedMore { consumed } => {
                        self.buf.consume(consumed);
                        break;
                    }
                    Step::Done { consumed } => {
                        self.buf.consume(consumed);
                        if rechunk {
                            self.out.extend_from_slice(LAST_CHUNK);
                        }
                        return self.flush().await;
                    }
                }
            }
            self.flush().await?;
            match self.read().await? {
                Fill::Read(_) => {}
                Fill::Eof => return Err(RelayError::Eof),
                Fill::Full => return Err(RelayError::Framing(ChunkError::TooLong)),
            }
        }
    }

    async fn until_close(&mut self, rechunk: bool) -> Result<(), RelayError> {
        loop {
            let n = self.buf.len();
            if n > 0 {
                if rechunk {
                    write_chunk_header(self.out, n);
                    self.out.extend_from_slice(self.buf.data());
                    self.out.extend_from_slice(b"\r\n");
                    self.buf.consume(n);
                    self.flush().await?;
                } else {
                    self.write_buffered(n).await?;
                }
            }
            match self.read().await? {
                Fill::Read(_) => {}
                Fill::Eof => break,
                Fill::Full => return Err(RelayError::Read(io::Error::other("buffer full"))),
            }
        }
        if rechunk {
            self.out.extend_from_slice(LAST_CHUNK);
            self.flush().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::buf::{IoBuf, IoVecBuf};
    use monoio::BufResult;

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

    async fn relay(
        input: &[u8],
        step: usize,
        from: Framing,
        to: Framing,
    ) -> (Result<(), RelayError>, Vec<u8>, Vec<u8>) {
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
            timers: &timers,
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
    async fn truncated_and_malformed_bodies_are_errors() {
        let (res, _, _) = relay(b"hello", 2, Framing::Length(10), Framing::Length(10)).await;
        assert!(matches!(res, Err(RelayError::Eof)));
        let (res, _, _) = relay(b"5\r\nhel", 2, Framing::Chunked, Framing::Chunked).await;
        assert!(matches!(res, Err(RelayError::Eof)));
        let (res, _, _) = relay(b"zz\r\n", 2, Framing::Chunked, Framing::Chunked).await;
        assert!(matches!(res, Err(RelayError::Framing(_))));
    }
}
