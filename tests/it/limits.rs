//! Limits an edge box needs: request body size (`max_body_bytes`, 413 before anything is
//! forwarded, or a chunked body cut as it grows) and client connections
//! (`max_connections`: new clients wait in the backlog, the oldest idle ones make room).

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn config(up: std::net::SocketAddr, server_extra: &str, route_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{server_extra}\n\
         [upstreams.web]\nservers = [\"{up}\"]\n\n\
         [[routes]]\npath_prefix = \"/big\"\nupstream = \"web\"\n{route_extra}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n"
    )
}

#[test]
fn a_declared_body_over_max_body_bytes_is_413_and_never_forwarded() {
    let up = Upstream::start("limits-len", Mode::Echo);
    let text = config(
        up.addr(),
        "max_body_bytes = \"1KiB\"",
        "max_body_bytes = \"4KiB\"",
    );
    let (_proxy, addr) = start_proxy(&text);
    let mut c = Client::connect(addr);
    let body = pattern(2000);
    let mut req = b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    let r = c.request(&req);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.closes(), "the unread body ends the connection");
    c.assert_closed();
    assert_eq!(up.requests(), 0, "nothing was forwarded");
    // The route's own limit is larger.
    let mut c = Client::connect(addr);
    let req = req.replacen(b"/small", b"/big/1");
    let r = c.request(&req);
    assert_eq!(r.status, 200, "{r:?}");
    assert_same_bytes(&r.body, &body, "the body under the route's limit");
}

trait ReplaceN {
    fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceN for Vec<u8> {
    fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let i = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("present");
        [&self[..i], to, &self[i + from.len()..]].concat()
    }
}

#[test]
fn a_chunked_body_that_grows_past_max_body_bytes_is_cut_with_413() {
    let up = Upstream::start("limits-chunked", Mode::Echo);
    let (_proxy, addr) = start_proxy(&config(up.addr(), "max_body_bytes = \"1KiB\"", ""));
    let mut c = Client::connect(addr);
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&encode_chunked(&pattern(3000), &[600], None));
    let r = c.read_response();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.closes());
    // The upstream connection that got part of the body is not reused. (The upstream
    // counts its accepts on its own thread: wait for the first to be counted.)
    assert!(poll_until(Duration::from_secs(5), || up.accepted() == 1));
    let before = up.accepted();
    let r = Client::connect(addr)
        .request(b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(up.accepted(), before + 1, "a fresh upstream connection");
    // At the limit exactly is fine.
    let mut c = Client::connect(addr);
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&encode_chunked(&pattern(1024), &[512], None));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn at_max_connections_new_clients_wait_and_the_oldest_idle_connection_makes_room() {
    let up = Upstream::start("limits-conns", Mode::Ok);
    let (_proxy, addr) = start_proxy(&config(up.addr(), "max_connections = 2", ""));
    let mut oldest = Client::connect(addr);
    assert_eq!(oldest.get("/1").status, 200);
    std::thread::sleep(Duration::from_millis(150));
    let mut newer = Client::connect(addr);
    assert_eq!(newer.get("/2").status, 200);
    // A third client: the kernel completes its handshake (the backlog), the proxy
    // accepts it only once the oldest idle connection was closed.
    let mut third = Client::connect(addr);
    assert_eq!(third.get("/3").status, 200);
    oldest.assert_closed();
    // Idle times are kept on the worker's 50 ms clock: apart by more than a tick.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        newer.get("/4").status,
        200,
        "the newer idle connection was kept"
    );
    // Again at the limit (`third` idle since /3, `newer` since /4): the next client is
    // served as soon as the one idle longer, `third`, makes room.
    let mut waiting = TcpStream::connect(addr).expect("the kernel accepts into the backlog");
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    waiting
        .write_all(b"GET /5 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = waiting.read(&mut buf).expect("answered once there is room");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    third.assert_closed();
    assert_eq!(newer.get("/6").status, 200);
}
