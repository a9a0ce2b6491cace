//! Upgrade tunnels: a real WebSocket echo server (tungstenite) behind the proxy and
//! tungstenite clients in front of it, over plain TCP and TLS; and the cases that must
//! not become tunnels (an Upgrade answered 200, a 101 nobody asked for).

use crate::admin::{call, json};
use crate::support::*;
use crate::tls::{tls_connect, Pki};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// A WebSocket echo server on 127.0.0.1:0: echoes text and binary messages, answers
/// pings (tungstenite does), and completes the close handshake. One thread per socket.
struct EchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
        let addr = listener.local_addr().expect("its address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || echo(stream));
            }
        });
        EchoServer { addr, accepted }
    }
}

fn echo(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn proxy_config(up: SocketAddr, listen: &str, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = [{listen}]\nworkers = 1\n{server_extra}\n\
         [upstreams.ws]\nservers = [\"{up}\"]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"ws\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A WebSocket client through the proxy at `addr`.
fn connect(addr: SocketAddr) -> WebSocket<TcpStream> {
    let tcp = TcpStream::connect(addr).expect("connect to the proxy");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let url = format!("ws://{addr}/chat");
    let (ws, resp) = tungstenite::client(url.as_str(), tcp).expect("the WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

fn tunnels_open(admin: SocketAddr) -> u64 {
    json(&call(admin, "GET", "/status", None))["tunnels_open"]
        .as_u64()
        .expect("tunnels_open")
}

#[test]
fn text_binary_ping_and_close_go_through_the_tunnel() {
    let echo = EchoServer::start();
    let (proxy, addr) = start_proxy(&proxy_config(echo.addr, "\"127.0.0.1:0\"", ""));
    let admin = proxy.admin_addr().expect("admin");
    let mut ws = connect(addr);
    ws.send(Message::text("hello through ringway")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello through ringway"));
    let bin: Vec<u8> = pattern(70_000);
    ws.send(Message::binary(bin.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(bin));
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert_eq!(tunnels_open(admin), 1);
    ws.close(None).unwrap();
    // The server's close frame comes back, then the connection ends.
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake: {e}"),
        }
    }
    assert!(
        poll_until(Duration::from_secs(5), || tunnels_open(admin) == 0),
        "the tunnel is counted closed"
    );
    let metrics = call(admin, "GET", "/metrics", None).text();
    assert!(metrics.contains("ringway_tunnels_total 1"), "{metrics}");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn two_hundred_sockets_are_tunnelled_at_once() {
    let echo = EchoServer::start();
    let (proxy, addr) = start_proxy(&proxy_config(echo.addr, "\"127.0.0.1:0\"", ""));
    let admin = proxy.admin_addr().expect("admin");
    let mut sockets: Vec<_> = (0..200).map(|_| connect(addr)).collect();
    assert_eq!(tunnels_open(admin), 200);
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send(Message::text(format!("socket {i}"))).unwrap();
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(ws.read().unwrap(), Message::text(format!("socket {i}")));
    }
    let status = json(&call(admin, "GET", "/status", None));
    let server = &status["upstreams"]["ws"]["servers"][0];
    assert_eq!(server["tunnels"], 200, "{server}");
    assert_eq!(server["in_flight"], 0, "tunnels are not requests: {server}");
    drop(sockets);
    assert!(poll_until(Duration::from_secs(10), || tunnels_open(admin) == 0));
}

#[test]
fn an_eight_mebibyte_message_crosses_both_ways() {
    let echo = EchoServer::start();
    let (_proxy, addr) = start_proxy(&proxy_config(echo.addr, "\"127.0.0.1:0\"", ""));
    let mut ws = connect(addr);
    let big = pattern(8 << 20);
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(got) => assert_same_bytes(&got, &big, "the 8 MiB echo"),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[test]
fn an_idle_tunnel_is_closed_at_tunnel_idle_timeout_and_request_timeout_does_not_cut_one() {
    let echo = EchoServer::start();
    let config = proxy_config(
        echo.addr,
        "\"127.0.0.1:0\"",
        "tunnel_idle_timeout = \"600ms\"",
    )
    .replace("servers = [", "request_timeout = \"200ms\"\nservers = [");
    let (proxy, addr) = start_proxy(&config);
    let admin = proxy.admin_addr().expect("admin");
    let mut ws = connect(addr);
    // Busy for longer than request_timeout: the tunnel lives on.
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        ws.send(Message::text(format!("{i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("{i}")));
    }
    // Then quiet: closed, without a close frame from the proxy.
    match ws.read() {
        Err(tungstenite::Error::Io(_))
        | Err(tungstenite::Error::ConnectionClosed)
        | Err(tungstenite::Error::Protocol(_)) => {}
        other => panic!("expected the tunnel to close, got {other:?}"),
    }
    assert!(poll_until(Duration::from_secs(5), || tunnels_open(admin) == 0));
}

#[test]
fn an_upgrade_answered_200_is_relayed_and_the_connection_stays_http() {
    let up = Upstream::start("no-upgrade", Mode::Ok);
    let (_proxy, addr) = start_proxy(&config_for(&[up.addr()]));
    let mut c = Client::connect(addr);
    let r = c.request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers.get("upgrade"), Some("websocket"));
    assert!(
        seen.headers.lists("connection", "upgrade"),
        "{:?}",
        seen.headers
    );
    // Still HTTP: the next request on the connection is parsed and forwarded.
    let r = c.get("/next");
    assert_eq!(r.status, 200);
    assert_eq!(up.last().target, "/next");
}

#[test]
fn a_protocol_not_listed_is_forwarded_without_its_upgrade_headers() {
    let up = Upstream::start("h2c", Mode::Ok);
    let (_proxy, addr) = start_proxy(&config_for(&[up.addr()]));
    let mut c = Client::connect(addr);
    let r = c.request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert!(!seen.headers.has("upgrade"), "{:?}", seen.headers);
    assert!(!seen.headers.has("http2-settings"), "{:?}", seen.headers);
}

#[test]
fn a_101_nobody_asked_for_is_a_502_and_never_a_tunnel() {
    let script = Script(Arc::new(|_seen: &Seen, _n: usize| {
        Scripted {
        raw: b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nRAW BYTES".to_vec(),
        close: false,
    }
    }));
    let up = Upstream::start("rogue-101", Mode::Script(script));
    let (_proxy, addr) = start_proxy(&config_for(&[up.addr()]));
    let mut c = Client::connect(addr);
    let r = c.get("/plain");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(!r.text().contains("RAW BYTES"));
    // Asked for websocket, offered something else: also refused.
    let script = Script(Arc::new(|_seen: &Seen, _n: usize| Scripted {
        raw: b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
            .to_vec(),
        close: false,
    }));
    let up = Upstream::start("wrong-101", Mode::Script(script));
    let (_proxy, addr) = start_proxy(&config_for(&[up.addr()]));
    let mut c = Client::connect(addr);
    let r = c
        .request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(r.status, 502, "{r:?}");
}

#[test]
fn a_reload_leaves_an_open_tunnel_alone() {
    let echo = EchoServer::start();
    let text = proxy_config(echo.addr, "\"127.0.0.1:0\"", "");
    let (proxy, addr) = start_proxy(&text);
    let mut ws = connect(addr);
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    // The reload drops the group the tunnel's server belongs to.
    let other = dead_addr();
    let next = text.replace(&echo.addr.to_string(), &other.to_string());
    let config = ringway::config::Config::parse(&next, "reload.toml").unwrap();
    proxy.reload_config(config).expect("reload");
    std::thread::sleep(Duration::from_millis(200));
    ws.send(Message::text("after")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after"));
}

#[test]
fn a_websocket_over_tls_works_end_to_end() {
    let pki = Pki::new("wss");
    let (cert, key) = pki.leaf("a", &["a.test"], false);
    let echo = EchoServer::start();
    let listen = format!(
        "{{ addr = \"127.0.0.1:0\", tls = {{ cert = \"{}\", key = \"{}\" }} }}",
        cert.display(),
        key.display()
    );
    let (_proxy, addr) = start_proxy(&proxy_config(echo.addr, &listen, ""));
    let tls = tls_connect(pki.client_config(), addr, "a.test").expect("handshake");
    let url = format!("wss://a.test:{}/secure", addr.port());
    let (mut ws, resp) = tungstenite::client(url.as_str(), tls).expect("wss handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("secure {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("secure {i}")));
    }
    let big = pattern(1 << 20);
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(got) => assert_same_bytes(&got, &big, "1 MiB over wss"),
        other => panic!("expected binary, got {other:?}"),
    }
    ws.close(None).unwrap();
    assert!(
        matches!(ws.read(), Ok(Message::Close(_))),
        "the echo server's close frame"
    );
}

#[test]
fn a_drain_gives_an_open_tunnel_until_shutdown_timeout_then_cuts_it() {
    let echo = EchoServer::start();
    let text = proxy_config(
        echo.addr,
        "\"127.0.0.1:0\"",
        "shutdown_timeout = \"1500ms\"",
    );
    let mut bin = Binary::start("ws-drain", &text);
    let addr = bin.addr();
    let mut ws = connect(addr);
    bin.signal(libc::SIGTERM);
    // Draining: no new connections, but the tunnel carries on.
    assert!(
        poll_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err()),
        "the listener closes"
    );
    ws.send(Message::text("while draining")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("while draining"));
    let status = bin
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the deadline");
    assert!(
        status.success(),
        "a drain that cut a tunnel still exits 0: {status:?}"
    );
    assert!(ws.read().is_err(), "the tunnel is gone with the process");
}
