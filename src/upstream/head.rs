//! Reading one response head from an upstream connection: the single read-and-parse
//! loop the proxy and the active health checks share.
//!
//! It returns at each complete head, interim (1xx) or final, so each caller decides
//! what an interim head means to it (the proxy forwards 103 and friends to HTTP/1.1
//! clients; the health checker skips them) and loops.

use crate::buf::{Buf, Fill};
use crate::error::ProxyError;
use crate::http::response::{self, Response, MAX_RESPONSE_HEAD};
use monoio::io::AsyncReadRent;
use std::mem::MaybeUninit;

/// Header slots per response parse (on the stack); more header fields is a bad response.
pub const RESPONSE_HEADER_SLOTS: usize = crate::http::MAX_HEADER_SLOTS;

/// Reads until `buf` starts with a complete response head and returns what `on_head`
/// made of it, with the head's length (not consumed: the caller consumes it once done
/// with the borrowed parse).
///
/// `reused`: the connection came from the pool, so closing before any byte means it
/// was closed while idle ([`ProxyError::ClosedIdle`]), not that the request failed.
pub async fn read_head<S: AsyncReadRent, R>(
    stream: &mut S,
    buf: &mut Buf,
    request_is_head: bool,
    reused: bool,
    mut on_head: impl FnMut(&Response<'_, '_>) -> Result<R, ProxyError>,
) -> Result<(R, usize), ProxyError> {
    let mut got_bytes = false;
    loop {
        if !buf.is_empty() {
            let mut slots = [const { MaybeUninit::uninit() }; RESPONSE_HEADER_SLOTS];
            if let Some(resp) = response::parse(buf.data(), &mut slots, request_is_head)? {
                let len = resp.head_len;
                return Ok((on_head(&resp)?, len));
            }
        }
        match buf.fill(stream, MAX_RESPONSE_HEAD).await {
            Ok(Fill::Read(_)) => got_bytes = true,
            Ok(Fill::Eof) | Err(_) if reused && !got_bytes => return Err(ProxyError::ClosedIdle),
            Ok(Fill::Eof) | Err(_) => return Err(ProxyError::UpstreamClosed),
            Ok(Fill::Full) => return Err(ProxyError::BadResponse("response head too large")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads heads from `wire` in reads of `step` bytes, returning each status.
    async fn statuses(wire: &[u8], step: usize) -> Result<Vec<u16>, ProxyError> {
        struct Trickle<'a>(&'a [u8], usize);
        impl AsyncReadRent for Trickle<'_> {
            async fn read<T: monoio::buf::IoBufMut>(
                &mut self,
                buf: T,
            ) -> monoio::BufResult<usize, T> {
                let n = self.1.min(self.0.len());
                let mut part = &self.0[..n];
                let (res, buf) = part.read(buf).await;
                if let Ok(k) = res {
                    self.0 = &self.0[k..];
                }
                (res, buf)
            }
            async fn readv<T: monoio::buf::IoVecBufMut>(
                &mut self,
                buf: T,
            ) -> monoio::BufResult<usize, T> {
                (Err(std::io::Error::other("unused")), buf)
            }
        }
        let mut src = Trickle(wire, step);
        let mut buf = Buf::with_capacity(64);
        let mut out = Vec::new();
        loop {
            let (status, len) =
                read_head(&mut src, &mut buf, false, false, |r| Ok(r.status)).await?;
            buf.consume(len);
            out.push(status);
            if status >= 200 {
                return Ok(out);
            }
        }
    }

    #[monoio::test]
    async fn interim_heads_come_back_one_by_one_at_any_split() {
        let wire = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for step in [1, 7, 1000] {
            assert_eq!(
                statuses(wire, step).await.unwrap(),
                [103, 200],
                "step {step}"
            );
        }
    }

    #[monoio::test]
    async fn closing_or_a_bad_status_is_an_upstream_failure() {
        assert_eq!(statuses(b"", 10).await, Err(ProxyError::UpstreamClosed));
        assert_eq!(
            statuses(b"HTTP/1.1 200 OK\r\nContent-Le", 10).await,
            Err(ProxyError::UpstreamClosed)
        );
        assert!(matches!(
            statuses(b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", 100).await,
            Err(ProxyError::BadResponse(_))
        ));
    }
}
