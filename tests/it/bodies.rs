//! Bodies in both directions, by every framing: Content-Length, chunked (re-framed,
//! extensions and trailers dropped), close-delimited, and large ones byte-exact.

use crate::support::{
    assert_same_bytes, encode_chunked, pattern, proxy_to, Client, Mode, SENT_LEN,
};

const MIB: usize = 1 << 20;

#[test]
fn chunked_request_body_is_reframed_without_extensions_and_arrives_exact() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let data = pattern(20_000);
    let mut req =
        b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(encode_chunked(
        &data,
        &[3, 1, 5000, 77],
        Some("X-Client-Trailer: t"),
    ));
    let mut c = Client::connect(addr);
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &data, "echoed body");

    let seen = up.last();
    assert_same_bytes(&seen.body, &data, "body at the upstream");
    assert!(seen.headers.lists("transfer-encoding", "chunked"));
    assert!(!seen.headers.has("content-length"));
    assert!(!seen.chunk_lines.is_empty());
    for line in &seen.chunk_lines {
        assert!(
            !line.contains(';') && u64::from_str_radix(line, 16).is_ok(),
            "chunk-size line forwarded with more than a size: {line:?}"
        );
    }
    assert!(
        seen.trailers.is_empty(),
        "trailers forwarded: {:?}",
        seen.trailers
    );
    assert!(!seen.headers.has("x-client-trailer"));
    for marker in [&b"ext=first"[..], b"X-Client-Trailer"] {
        assert!(
            !seen.wire_body.windows(marker.len()).any(|w| w == marker),
            "{} reached the upstream",
            String::from_utf8_lossy(marker)
        );
    }
}

#[test]
fn chunked_response_reaches_the_client_byte_exact() {
    let data = pattern(50_000);
    let (_up, _proxy, addr) = proxy_to(Mode::Chunked(data.clone()));
    let mut c = Client::connect(addr);
    let r = c.get("/chunked");
    assert_eq!(r.status, 200);
    assert!(r.headers.lists("transfer-encoding", "chunked"));
    assert_same_bytes(&r.body, &data, "chunked response body");
    for line in &r.chunk_lines {
        assert!(!line.contains(';'), "chunk extension forwarded: {line:?}");
    }
    assert!(
        r.trailers.is_empty(),
        "trailers forwarded: {:?}",
        r.trailers
    );
    // The connection is at a message boundary afterwards.
    assert_same_bytes(&c.get("/again").body, &data, "second chunked response");
}

#[test]
fn close_delimited_response_reaches_an_http11_client_chunked_and_the_connection_survives() {
    let data = pattern(30_000);
    let (up, _proxy, addr) = proxy_to(Mode::CloseDelimited(data.clone()));
    let mut c = Client::connect(addr);
    let r = c.get("/stream");
    assert_eq!(r.status, 200);
    assert!(
        r.headers.lists("transfer-encoding", "chunked"),
        "{:?}",
        r.headers
    );
    assert!(!r.closes(), "{:?}", r.headers);
    assert_same_bytes(&r.body, &data, "close-delimited body");
    let r = c.get("/stream-again");
    assert_same_bytes(&r.body, &data, "second close-delimited body");
    assert_eq!(
        up.accepted(),
        2,
        "each close-delimited response needs its own connection"
    );
}

#[test]
fn close_delimited_response_reaches_an_http10_client_close_delimited() {
    let data = pattern(30_000);
    let (_up, _proxy, addr) = proxy_to(Mode::CloseDelimited(data.clone()));
    let mut c = Client::connect(addr);
    let r = c.request(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(!r.headers.has("transfer-encoding"), "no chunked for 1.0");
    assert_same_bytes(&r.body, &data, "close-delimited body for HTTP/1.0");
}

#[test]
fn five_mib_upload_arrives_byte_exact() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let data = pattern(5 * MIB);
    let mut req = format!(
        "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(&data);
    let mut c = Client::connect(addr);
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert_same_bytes(&up.last().body, &data, "upload at the upstream");
    assert_same_bytes(&r.body, &data, "echo of the upload");
}

#[test]
fn five_mib_chunked_upload_arrives_byte_exact() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let data = pattern(5 * MIB);
    let mut req = b"PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend(encode_chunked(&data, &[65_536, 1, 100_000, 4097], None));
    let mut c = Client::connect(addr);
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert_same_bytes(&up.last().body, &data, "chunked upload at the upstream");
    assert_same_bytes(&r.body, &data, "echo of the chunked upload");
}

#[test]
fn ten_mib_download_arrives_byte_exact() {
    let (_up, _proxy, addr) = proxy_to(Mode::Big(10 * MIB));
    let want = pattern(10 * MIB);
    let mut c = Client::connect(addr);
    let r = c.get("/big");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-length"),
        Some(want.len().to_string().as_str())
    );
    assert_same_bytes(&r.body, &want, "download");
    // And the connection is reusable after a large body.
    assert_same_bytes(&c.get("/big").body, &want, "second download");
}

#[test]
fn a_truncated_chunked_response_is_never_terminated_for_the_client() {
    let (_up, _proxy, addr) = proxy_to(Mode::CloseMidChunked);
    let mut c = Client::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.try_read_response(false).expect("a response head");
    assert_eq!(r.status, 200);
    assert!(!r.complete, "a cut chunked body must not get a last chunk");
    assert!(r.body.len() <= SENT_LEN);
    c.assert_closed();
}

#[test]
fn streamed_bodies_on_a_pooled_upstream_connection_do_not_stall_the_worker() {
    // Bodies over retry_body_max are streamed, so a pooled upstream connection is
    // checked for liveness first; that check must never block the worker.
    let up = crate::support::Upstream::start("echo", Mode::Echo);
    let (_proxy, addr) = crate::support::start_proxy(&crate::support::config_with(
        &[up.addr()],
        "retry_body_max = \"1KiB\"\n",
    ));
    let data = pattern(8_000);
    let mut c = Client::connect(addr);
    for i in 0..3 {
        let mut req = format!(
            "POST /up/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )
        .into_bytes();
        req.extend_from_slice(&data);
        let r = c.request(&req);
        assert_eq!(r.status, 200, "upload {i}");
        assert_same_bytes(&r.body, &data, "echoed upload");
    }
    assert_eq!(up.accepted(), 1, "the uploads shared one pooled connection");
    let mut other = Client::connect(addr);
    assert_eq!(
        other.get("/after").status,
        200,
        "the worker still serves others"
    );
}
