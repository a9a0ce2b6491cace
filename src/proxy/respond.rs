//! Answers the proxy makes itself, written once: an error response for a failure that
//! can still be answered, then either keep the connection (the request was read whole,
//! so the next byte starts a request) or close it with a lingering close.

use super::head::{group_name, Head};
use super::Conn;
use crate::buf::{write_vec, Fill, CLIENT_BUF};
use crate::client::ClientStream;
use crate::error::{write_error_response, ErrorReply, ProxyError};
use crate::shard::Generation;
use monoio::io::AsyncWriteRent;
use std::time::Duration;

/// A failed request, as the request path hands it to [`answer`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Failed {
    /// What failed.
    pub err: ProxyError,
    /// The request was read whole (body included) and consumed: the connection is at
    /// a request boundary and may be kept.
    pub drained: bool,
}

/// How long a proxy-made answer may take to write before the client is given up on.
const ANSWER_WRITE: Duration = Duration::from_secs(10);

/// Answers a failed request if it can be answered, then says whether the connection
/// may be kept (`true`) or was closed. `head` is `None` when the head itself was bad.
pub(super) async fn answer(
    c: &mut Conn<'_>,
    gen: &Generation,
    head: Option<&Head>,
    f: Failed,
) -> bool {
    if !f.err.is_answerable() {
        // The client is gone or the response already started: there is nothing to say.
        return false;
    }
    let keep = f.drained && head.is_some_and(|h| h.keep_alive);
    let upstream = head
        .filter(|_| !f.err.is_client_fault())
        .and_then(|h| group_name(gen, h));
    let date = c.shard.date();
    let reply = ErrorReply {
        err: f.err,
        upstream,
        close: !keep,
        is_head: head.is_some_and(|h| h.is_head),
        format: gen.snap().server.error_format,
        date: &date,
    };
    c.out.clear();
    write_error_response(c.out, &reply);
    c.bytes_out += c.out.len() as u64;
    let _ = c
        .shard
        .timers()
        .timeout(ANSWER_WRITE, write_vec(c.client, c.out))
        .await;
    if keep {
        return true;
    }
    linger_close(c).await;
    false
}

/// Answers a request on a `redirect_https` listener: 308 to the `https://` URL that
/// `head::prepare` wrote into `out`. A request with a body is not read: the connection
/// closes after the answer (never a body left unread on a kept connection).
pub(super) async fn redirect(c: &mut Conn<'_>, head: &Head) -> (bool, u16) {
    let keep = head.keep_alive && head.body == crate::http::Framing::None;
    if keep {
        c.cbuf.consume(head.len);
    }
    let location = std::mem::take(c.out);
    let mut out = Vec::with_capacity(location.len() + 160);
    out.extend_from_slice(b"HTTP/1.1 308 Permanent Redirect\r\nDate: ");
    out.extend_from_slice(&c.shard.date());
    out.extend_from_slice(b"\r\nLocation: ");
    out.extend_from_slice(&location);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    *c.out = location;
    c.bytes_out += out.len() as u64;
    let write = monoio::io::AsyncWriteRentExt::write_all(c.client, out);
    let written = matches!(
        c.shard.timers().timeout(ANSWER_WRITE, write).await,
        Some((Ok(_), _))
    );
    if keep && written {
        return (true, 308);
    }
    linger_close(c).await;
    (false, 308)
}

/// Closes a connection that may still have unread request bytes in flight.
///
/// Closing a socket with unread data makes the kernel send RST, which can destroy the
/// error response before the client reads it; so shut down our side first and drain
/// what the client still sends, for a bounded time and size (nginx's lingering close).
async fn linger_close(c: &mut Conn<'_>) {
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_DRAIN: usize = 1 << 20;
    if c.client.shutdown().await.is_err() {
        return;
    }
    let (client, cbuf) = (&mut *c.client, &mut *c.cbuf);
    let drain = async {
        let mut drained = 0;
        while drained < MAX_DRAIN {
            cbuf.consume(cbuf.len());
            match cbuf.fill(client, CLIENT_BUF).await {
                Ok(Fill::Read(n)) => drained += n,
                _ => break,
            }
        }
    };
    let _ = c.shard.timers().timeout(LINGER, drain).await;
}

/// Tells a client that sent `Expect: 100-continue` to go on with its body.
pub(super) async fn send_continue(client: &mut ClientStream) -> std::io::Result<()> {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let (res, _) = monoio::io::AsyncWriteRentExt::write_all(client, CONTINUE).await;
    res.map(|_| ())
}
