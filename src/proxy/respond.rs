//! Answers the proxy makes itself, written once: an error response for a failure that
//! can still be answered, then either keep the connection (the request was read whole,
//! so the next byte starts a request) or close it with a lingering close.

use super::head::{group_name, Head};
use super::Conn;
use crate::buf::{write_vec, Fill, CLIENT_BUF};
use crate::client::ClientStream;
use crate::config::LocalAnswer;
use crate::error::{reason_phrase, write_error_response, ErrorReply, ProxyError};
use crate::http::rewrite::{push_u64, Edits, Vars};
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
/// `head::prepare` wrote into `out`.
pub(super) async fn redirect(c: &mut Conn<'_>, gen: &Generation, head: &Head) -> (bool, u16) {
    let location = std::mem::take(c.out);
    let answer = Answer {
        status: 308,
        location: Some(&location),
        headers: &[],
        body: b"",
    };
    let done = write_answer(c, gen, head, &answer).await;
    *c.out = location;
    done
}

/// Answers a request on a route with `respond` or `redirect` (a redirect's `Location`
/// is in `out`, from `head::prepare`).
pub(super) async fn local(c: &mut Conn<'_>, gen: &Generation, head: &Head) -> (bool, u16) {
    let route = head.local.map(|r| gen.snap().router.route(r));
    let location = std::mem::take(c.out);
    let answer = match route.and_then(|r| r.local.as_ref()) {
        Some(LocalAnswer::Respond {
            status,
            headers,
            body,
        }) => Answer {
            status: *status,
            location: None,
            headers,
            body,
        },
        Some(LocalAnswer::Redirect { status, .. }) => Answer {
            status: *status,
            location: Some(&location),
            headers: &[],
            body: b"",
        },
        // `prepare` sets `local` only for a route that has one.
        None => Answer {
            status: 500,
            location: None,
            headers: &[],
            body: b"",
        },
    };
    let done = write_answer(c, gen, head, &answer).await;
    *c.out = location;
    done
}

/// An answer made by the proxy for a request it read the head of.
struct Answer<'a> {
    status: u16,
    location: Option<&'a [u8]>,
    headers: &'a [(String, String)],
    body: &'a [u8],
}

/// Writes `a` (with `Date`, the configured response header edits and its length). A
/// request with a body is not read: the connection closes after the answer, so no body
/// is ever left unread on a kept connection. Returns whether the connection is kept.
async fn write_answer(
    c: &mut Conn<'_>,
    gen: &Generation,
    head: &Head,
    a: &Answer<'_>,
) -> (bool, u16) {
    let keep = head.keep_alive && head.body == crate::http::Framing::None;
    if keep {
        c.cbuf.consume(head.len);
    }
    let edits = answer_edits(c, gen, head, head.local);
    let dropped = |n: &str| edits.as_ref().is_some_and(|e| e.drops(n));
    let with_body = !head.is_head && a.status != 204 && a.status != 304;
    let mut out = Vec::with_capacity(256 + a.body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut out, u64::from(a.status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(a.status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(&c.shard.date());
    out.extend_from_slice(b"\r\n");
    if let Some(l) = a.location {
        out.extend_from_slice(b"Location: ");
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in a.headers.iter().filter(|(n, _)| !dropped(n)) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = &edits {
        e.write(&mut out);
    }
    if a.status != 204 && a.status != 304 {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(&mut out, a.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.version == crate::http::Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if with_body {
        out.extend_from_slice(a.body);
    }
    c.bytes_out += out.len() as u64;
    let write = monoio::io::AsyncWriteRentExt::write_all(c.client, out);
    let written = matches!(
        c.shard.timers().timeout(ANSWER_WRITE, write).await,
        Some((Ok(_), _))
    );
    if keep && written {
        return (true, a.status);
    }
    linger_close(c).await;
    (false, a.status)
}

/// The response header edits for an answer made here to `head` on route `route`
/// (`[server]`'s, then the route's), `None` when neither scope has any.
pub(super) fn answer_edits<'a>(
    c: &Conn<'a>,
    gen: &'a Generation,
    head: &'a Head,
    route: Option<usize>,
) -> Option<Edits<'a>> {
    static NONE: crate::config::HeaderEdits = crate::config::HeaderEdits::NONE;
    let snap = gen.snap();
    let route = route.map_or(&NONE, |r| &snap.router.route(r).response_headers);
    let scopes = [&snap.server.response_headers, route];
    (!scopes[0].is_empty() || !scopes[1].is_empty()).then(|| Edits {
        scopes,
        vars: Vars {
            peer: c.peer,
            scheme: c.scheme.as_str(),
            host: head.resp_host.as_deref().unwrap_or("").as_bytes(),
            request_id: head.request_id.as_bytes(),
            upstream: None,
        },
    })
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
