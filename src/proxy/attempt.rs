//! One attempt on one server: send the request over a connection, then read the
//! response head, forwarding interim 1xx heads to the client and writing the final head
//! the client will get into `out`. Whether a failed attempt is retried is decided by
//! the caller (`exchange`) from the one failure table.

use super::cached::CacheFill;
use super::head::Head;
use super::upstream::Upstreams;
use super::Conn;
use crate::buf::write_vec;
use crate::config::RetryOn;
use crate::error::ProxyError;
use crate::http::response::Response;
use crate::http::rewrite::{write_client_response, write_interim_response, ClientHead, Edits};
use crate::http::{Framing, Version};
use crate::upstream::head::read_head;
use crate::upstream::pool::UpConn;
use crate::upstream::stream::UpStream;

/// Bodies up to this size that are already buffered travel in the same write as the head.
pub(super) const COALESCE_MAX: usize = 16 * 1024;

/// What the response head said.
#[derive(Debug, Clone, Copy)]
pub(super) struct RespHead {
    /// Status code.
    pub status: u16,
    /// How the body arrives from the upstream (`None` once coalesced into `out`).
    pub input: Framing,
    /// How the body is sent to the client.
    pub output: Framing,
    /// The upstream connection may carry another request afterwards.
    pub reusable: bool,
    /// The client connection ends after this response.
    pub close_client: bool,
    /// Bytes of the client head at the start of `out` (a small body may follow it).
    pub head_len: usize,
}

impl RespHead {
    /// A 304 the cache took as confirming its entry: nothing to relay.
    fn revalidated(reusable: bool) -> RespHead {
        RespHead {
            status: 304,
            input: Framing::None,
            output: Framing::None,
            reusable,
            close_client: false,
            head_len: 0,
        }
    }
}

/// Sends the request head in `out` (which a retry resends, so it is kept) and, unless
/// `coalesced` into `out`, a buffered body of `body` bytes from the client buffer
/// (written without consuming it, for the same reason).
///
/// A write that fails on a pooled connection means the upstream had closed it idle.
pub(super) async fn send(
    c: &mut Conn<'_>,
    conn: &mut UpConn,
    head: &Head,
    body: Option<usize>,
    coalesced: bool,
) -> Result<(), ProxyError> {
    let mut sent = send_keep(&mut conn.stream, c.out).await;
    if let (Ok(()), false, Some(n)) = (&sent, coalesced, body) {
        sent = c.cbuf.write_range(&mut conn.stream, head.len, n).await;
    }
    sent.map_err(|_| {
        if conn.reused {
            ProxyError::StaleConnection
        } else {
            ProxyError::UpstreamClosed
        }
    })
}

/// Writes `out` without clearing it, so the same request can be resent.
async fn send_keep(stream: &mut UpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let vec = std::mem::take(out);
    let (res, vec) = monoio::io::AsyncWriteRentExt::write_all(stream, vec).await;
    *out = vec;
    res.map(|_| ())
}

/// How one parsed head is used.
enum Parsed {
    /// An interim head (forwarded when the interim buffer is not empty).
    Interim,
    /// A status `retry_on` names: `out` still holds the request.
    Retry(u16),
    /// The final head, written for the client into `out`.
    Final(RespHead),
    /// A 304 that confirmed the entry the cache revalidated: nothing written. Whether
    /// the upstream connection may be reused.
    Revalidated(bool),
}

/// Reads the upstream's response head within `response_header_timeout` (cut short by
/// the request's deadline) and writes the client's response head into `out`; a small
/// complete body follows it there.
///
/// With `retry` set, a status it names comes back as `UpstreamStatus` and `out` is left
/// holding the request, ready to be resent elsewhere.
///
/// With `fill` (a route that caches), the head says `X-Cache`, and `fill` decides from
/// it whether the response will be stored; a 304 that confirms the entry `fill`
/// revalidates comes back with status 304 and nothing written.
pub(super) async fn response_head(
    c: &mut Conn<'_>,
    ups: &Upstreams<'_>,
    conn: &mut UpConn,
    edits: Option<&Edits<'_>>,
    retry: Option<&RetryOn>,
    mut fill: Option<&mut CacheFill<'_>>,
) -> Result<RespHead, ProxyError> {
    let limit = ups.budget(ups.group.response_header_timeout)?;
    let (shard, head) = (c.shard, ups.head);
    let date = shard.date();
    let (client, out) = (&mut *c.client, &mut *c.out);
    // The request head is still at the front of the client buffer: a request the cache
    // sees has no body, so it was sent whole from there and is consumed only later.
    let request = c.cbuf.data().get(..head.len).unwrap_or_default();
    let key = &c.key[..];
    let mut interim_bytes = 0;
    let read = async {
        // Only the first head can tell that a pooled connection was closed idle.
        let mut reused = conn.reused;
        loop {
            // Allocated only when an upstream sends an interim head to forward.
            let mut interim = Vec::new();
            let (parsed, len) = read_head(
                &mut conn.stream,
                &mut conn.buf,
                head.is_head,
                reused,
                |resp| {
                    let client_head = ClientHead {
                        body: Framing::None,
                        version: head.version,
                        // A drain that started since the request came in closes the
                        // connection after this response.
                        close: shard.draining(),
                        edits,
                        date: &date,
                        x_cache: fill.as_ref().map(|f| f.status.header()),
                        upgrade: None,
                    };
                    let cache = fill.as_deref_mut().filter(|_| !resp.is_interim());
                    if cache.is_some_and(|f| f.on_head(resp, request, key, shard.unix_secs())) {
                        return Ok(Parsed::Revalidated(resp.reusable));
                    }
                    prepare(resp, head, out, &mut interim, client_head, retry)
                },
            )
            .await?;
            reused = false;
            match parsed {
                Parsed::Retry(status) => return Err(ProxyError::UpstreamStatus(status)),
                Parsed::Interim => {
                    conn.buf.consume(len);
                    interim_bytes += interim.len() as u64;
                    if write_vec(client, &mut interim).await.is_err() {
                        return Err(ProxyError::ClientGone);
                    }
                }
                Parsed::Final(mut r) => {
                    conn.buf.consume(len);
                    coalesce_small_body(conn, out, &mut r);
                    return Ok(r);
                }
                Parsed::Revalidated(reusable) => {
                    conn.buf.consume(len);
                    return Ok(RespHead::revalidated(reusable));
                }
            }
        }
    };
    // The worker's coarse timers (50 ms ticks): cheaper per request than a monoio
    // `Sleep`, and a response head timeout needs no finer grain.
    let result = match shard.timers().timeout_at(shard.now() + limit, read).await {
        Some(r) => r,
        None if limit < ups.group.response_header_timeout => Err(ProxyError::RequestDeadline),
        None => Err(ProxyError::ResponseTimeout),
    };
    c.bytes_out += interim_bytes;
    result
}

/// Moves a small body that arrived with the head into `out`, so head and body go to
/// the client in one write.
fn coalesce_small_body(conn: &mut UpConn, out: &mut Vec<u8>, r: &mut RespHead) {
    if let Framing::Length(n) = r.input {
        if let Ok(n) = usize::try_from(n) {
            if n <= COALESCE_MAX && conn.buf.len() >= n {
                out.extend_from_slice(&conn.buf.data()[..n]);
                conn.buf.consume(n);
                r.input = Framing::None;
            }
        }
    }
}

/// Decides what one response head means and writes what the client gets.
fn prepare<'b>(
    resp: &Response<'_, 'b>,
    head: &Head,
    out: &mut Vec<u8>,
    interim: &mut Vec<u8>,
    mut client: ClientHead<'b>,
    retry: Option<&RetryOn>,
) -> Result<Parsed, ProxyError> {
    if resp.status == 101 {
        // Only a request the proxy forwarded with Upgrade may be answered 101, and only
        // for the protocol it asked for: anything else would tunnel unchecked bytes.
        let offered = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .map(|h| h.value);
        let Some(wanted) = head.upgrade.as_deref() else {
            return Err(ProxyError::BadResponse(
                "unexpected 101 Switching Protocols",
            ));
        };
        let names = |v: &&[u8]| {
            super::gate::first_protocol(v).is_some_and(|p| p.eq_ignore_ascii_case(wanted))
        };
        let Some(offered) = offered.filter(names) else {
            return Err(ProxyError::BadResponse(
                "101 Switching Protocols to a protocol not asked for",
            ));
        };
        client.upgrade = Some(offered);
        client.close = false;
        out.clear();
        write_client_response(out, resp, &client);
        return Ok(Parsed::Final(RespHead {
            status: 101,
            input: Framing::None,
            output: Framing::None,
            reusable: false,
            close_client: true,
            head_len: out.len(),
        }));
    }
    if resp.is_interim() {
        // 100 Continue is the proxy's own business (it answers `Expect` itself); other
        // 1xx go to HTTP/1.1 clients, never to HTTP/1.0 ones (RFC 9110 §15.2).
        if resp.status != 100 && head.version == Version::Http11 {
            write_interim_response(interim, resp);
        }
        return Ok(Parsed::Interim);
    }
    if retry.is_some_and(|r| r.status(resp.status)) {
        return Ok(Parsed::Retry(resp.status));
    }
    let output = match resp.body {
        Framing::None => Framing::None,
        Framing::Length(n) => Framing::Length(n),
        Framing::Chunked | Framing::Close if head.version == Version::Http11 => Framing::Chunked,
        Framing::Chunked | Framing::Close => Framing::Close,
    };
    let close_client = client.close || !head.keep_alive || output == Framing::Close;
    client.body = output;
    client.close = close_client;
    out.clear();
    write_client_response(out, resp, &client);
    Ok(Parsed::Final(RespHead {
        status: resp.status,
        input: resp.body,
        output,
        reusable: resp.reusable,
        close_client,
        head_len: out.len(),
    }))
}
