//! Bad requests: each gets its status and `Connection: close`, the connection is then
//! closed, and nothing reaches the upstream.

use crate::support::{proxy_to, Client, Mode};

/// Sends `raw`, expects `status` with `Connection: close`, then a closed connection,
/// and checks that the upstream saw nothing at all.
fn assert_rejected(raw: &[u8], status: u16) {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let mut c = Client::connect(addr);
    let r = c.request(raw);
    assert_eq!(r.status, status, "{}", r.text());
    assert!(r.closes(), "no `Connection: close`: {:?}", r.headers);
    assert!(r.text().starts_with(&status.to_string()), "{}", r.text());
    c.assert_closed();
    assert_eq!(up.requests(), 0, "a malformed request reached the upstream");
    assert_eq!(
        up.heads(),
        0,
        "a malformed request head reached the upstream"
    );
    assert_eq!(
        up.accepted(),
        0,
        "the proxy connected upstream for a malformed request"
    );
}

#[test]
fn a_header_line_without_a_colon_gets_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nHost: t\r\nNo-Colon-Here\r\n\r\n", 400);
}

#[test]
fn a_garbled_request_line_gets_400() {
    assert_rejected(b"G(E)T / HTTP/1.1\r\nHost: t\r\n\r\n", 400);
}

#[test]
fn content_length_with_transfer_encoding_gets_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn differing_duplicate_content_lengths_get_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
}

#[test]
fn an_invalid_content_length_gets_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
        400,
    );
}

#[test]
fn a_transfer_encoding_not_ending_in_chunked_gets_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn a_transfer_encoding_of_gzip_alone_gets_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        400,
    );
}

#[test]
fn chunked_listed_twice_gets_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn obsolete_line_folding_gets_400() {
    assert_rejected(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: first\r\n  second\r\n\r\n",
        400,
    );
}

#[test]
fn a_missing_host_on_http11_gets_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400);
}

#[test]
fn two_host_headers_get_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

#[test]
fn a_too_large_header_block_gets_431() {
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    assert_rejected(raw.as_bytes(), 431);
}

#[test]
fn too_many_headers_get_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..101 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_rejected(raw.as_bytes(), 431);
}

#[test]
fn a_too_long_target_gets_414() {
    let raw = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    assert_rejected(raw.as_bytes(), 414);
}

#[test]
fn an_unknown_transfer_coding_gets_501() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: frobnicate\r\n\r\nhello",
        501,
    );
}

#[test]
fn connect_gets_501() {
    assert_rejected(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        501,
    );
}

#[test]
fn http_2_0_gets_505() {
    assert_rejected(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
}

#[test]
fn http_1_2_gets_505() {
    assert_rejected(b"GET / HTTP/1.2\r\nHost: t\r\n\r\n", 505);
}

#[test]
fn an_unknown_expectation_gets_417() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\nhello",
        417,
    );
}

#[test]
fn a_bad_chunk_size_in_a_chunked_body_gets_400() {
    // The head is streamed upstream before the body is read, so the upstream may see
    // the head; what it must never see is a complete request.
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let mut c = Client::connect(addr);
    let r = c.request(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.closes(), "no `Connection: close`: {:?}", r.headers);
    c.assert_closed();
    assert_eq!(up.requests(), 0, "a malformed request reached the upstream");
}

#[test]
fn a_bad_chunk_size_after_good_chunks_gets_400() {
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    let mut c = Client::connect(addr);
    let r = c.request(
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n-1\r\nx\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.closes(), "no `Connection: close`: {:?}", r.headers);
    c.assert_closed();
    assert_eq!(up.requests(), 0, "a malformed request reached the upstream");
}

#[test]
fn a_non_ascii_absolute_target_gets_400_and_the_worker_lives_on() {
    // Found by fuzzing: a multi-byte character across byte 7 of a target that is not
    // origin-form used to panic the parser, and a panicking worker ends the process.
    let (up, _proxy, addr) = proxy_to(Mode::Echo);
    for raw in [
        &b"GET \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET http:/\xd3\xbaxa HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let r = Client::connect(addr).request(raw);
        assert_eq!(r.status, 400);
    }
    assert_eq!(Client::connect(addr).get("/after").status, 200);
    assert_eq!(up.requests(), 1);
}
