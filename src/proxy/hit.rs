//! Answers from the cache: a stored response written for one request, with its `Age`,
//! `X-Cache`, `Via`, the configured response header edits and its own framing, or a
//! 304 when the client's copy is current.
//!
//! A small body goes out with the head in one write, copied into the connection's
//! buffer; a large one is written from the shared `Bytes` (a reference count, no copy).

use super::attempt::COALESCE_MAX;
use super::exchange::Outcome;
use super::head::Head;
use super::respond::Failed;
use super::Conn;
use crate::buf::write_vec;
use crate::cache::{Status, Stored};
use crate::error::ProxyError;
use crate::http::rewrite::{push_u64, VIA};
use crate::http::Version;
use crate::shard::Generation;
use std::sync::Arc;

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [&str; 6] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
];

/// Writes `stored` as the answer to `head` (whose bytes were consumed), labelled
/// `status`; `not_modified`: the client's conditionals matched, answer 304.
pub(super) async fn serve(
    c: &mut Conn<'_>,
    gen: &Generation,
    head: &Head,
    stored: &Arc<Stored>,
    status: Status,
    not_modified: bool,
) -> Outcome {
    let shard = c.shard;
    shard.cache().count(status);
    let keep = head.keep_alive && !shard.draining();
    let with_body = !head.is_head && !not_modified && stored.status != 204;
    write_head(c, gen, head, stored, status, not_modified, keep);
    let large = with_body && stored.body.len() > COALESCE_MAX;
    if with_body && !large {
        c.out.extend_from_slice(&stored.body);
    }
    let timeout = gen.snap().server.body_timeout;
    let gone = Failed {
        err: ProxyError::ClientGone,
        drained: false,
    };
    c.bytes_out += c.out.len() as u64;
    let write = write_vec(c.client, c.out);
    if !matches!(shard.timers().timeout(timeout, write).await, Some(Ok(()))) {
        return Err(gone);
    }
    if large {
        let body = stored.body.clone();
        let len = body.len() as u64;
        let write = monoio::io::AsyncWriteRentExt::write_all(c.client, body);
        match shard.timers().timeout(timeout, write).await {
            Some((Ok(_), _)) => c.bytes_out += len,
            _ => return Err(gone),
        }
    }
    Ok(super::cached::answered(
        keep,
        if not_modified { 304 } else { stored.status },
    ))
}

/// Writes the response head into `out`.
fn write_head(
    c: &mut Conn<'_>,
    gen: &Generation,
    head: &Head,
    stored: &Stored,
    status: Status,
    not_modified: bool,
    keep: bool,
) {
    let edits = super::respond::answer_edits(c, gen, head, head.route.map(|(r, _)| r));
    let dropped = |name: &str| edits.as_ref().is_some_and(|e| e.drops(name));
    let out = &mut *c.out;
    out.clear();
    if not_modified {
        out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n");
        let has_etag = stored.etag.is_some();
        for (name, value) in stored.fields() {
            let listed = NOT_MODIFIED_FIELDS
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
                || (!has_etag && name.eq_ignore_ascii_case("last-modified"));
            if listed && !dropped(name) {
                field(out, name, value);
            }
        }
    } else if edits.is_some() {
        let line_end = stored
            .head
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        out.extend_from_slice(&stored.head[..line_end]);
        for (name, value) in stored.fields().filter(|(n, _)| !dropped(n)) {
            field(out, name, value);
        }
    } else {
        out.extend_from_slice(&stored.head);
    }
    out.extend_from_slice(b"Age: ");
    push_u64(out, stored.freshness.age(c.shard.unix_secs()));
    out.extend_from_slice(b"\r\n");
    if !dropped("via") {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(VIA);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(status.header());
    if let Some(e) = &edits {
        e.write(out);
    }
    if !not_modified && stored.status != 204 {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, stored.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
