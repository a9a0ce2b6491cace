//! TLS termination: certificates made here with rcgen (a CA and leaves signed by it),
//! real handshakes from a rustls client (and curl where installed), SNI, reload,
//! `ringway check`, the https redirect, and clients that fail the handshake.

use crate::support::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A test CA and the files of the leaves it signed, in a directory of their own.
pub struct Pki {
    /// Where the PEM files are.
    pub dir: PathBuf,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA; `name` keeps concurrent tests' files apart.
    pub fn new(name: &str) -> Pki {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pki-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the pki dir");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ringway test CA {name}"));
        let cert = params.self_signed(&key).expect("self-sign the CA");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("write ca.pem");
        Pki {
            dir,
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs a leaf for `names` (DNS names or IP addresses), written as `FILE.pem` and
    /// `FILE.key`; `expired`: its validity ended in 2001. Returns the two paths.
    pub fn leaf(&self, file: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("a leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let (cert_path, key_path) = (
            self.path(&format!("{file}.pem")),
            self.path(&format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write the leaf");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (cert_path, key_path)
    }

    /// A file in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A rustls client config that trusts only this CA and offers `http/1.1`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add the CA");
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking TLS client stream.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` with SNI `name`, verifying against `config`, and completes the
/// handshake.
pub fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let server = ServerName::try_from(name.to_string()).expect("a valid name");
    let conn = rustls::ClientConnection::new(config, server).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// The leaf certificate the server presented.
fn peer_leaf(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().expect("a peer certificate")[0].to_vec()
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem_path: &Path) -> Vec<u8> {
    ringway::tls::certs::read_chain(pem_path).expect("read the chain")[0].to_vec()
}

/// A TLS listener entry for `[server] listen`.
fn tls_listen(cert: &Path, key: &Path) -> String {
    format!(
        "{{ addr = \"127.0.0.1:0\", tls = {{ cert = \"{}\", key = \"{}\" }} }}",
        cert.display(),
        key.display()
    )
}

/// A one-worker config with `listen` and one group `web` over `up`.
fn config(listen: &str, up: SocketAddr, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = [{listen}]\nworkers = 1\n{server_extra}\n\
         [upstreams.web]\nservers = [\"{up}\"]\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n"
    )
}

#[test]
fn a_request_over_tls_is_proxied_and_forwarded_as_https() {
    let pki = Pki::new("basic");
    let (cert, key) = pki.leaf("a", &["a.test"], false);
    let up = Upstream::start("tls-basic", Mode::Echo);
    let (_proxy, addr) = start_proxy(&config(&tls_listen(&cert, &key), up.addr(), ""));
    let tls = tls_connect(pki.client_config(), addr, "a.test").expect("handshake");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut client = Client::over(tls);
    for i in 0..3 {
        let r = client.get(&format!("/over-tls/{i}"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(up.last().target, format!("/over-tls/{i}"));
    }
    let seen = up.last();
    assert_eq!(seen.headers.get("x-forwarded-proto"), Some("https"));
    let forwarded = seen.headers.get("forwarded").expect("Forwarded");
    assert!(forwarded.contains("proto=https"), "{forwarded}");
    assert_eq!(
        up.accepted(),
        1,
        "one pooled upstream connection for 3 requests"
    );
}

#[test]
fn sni_picks_the_certificate_named_and_the_first_is_the_default() {
    let pki = Pki::new("sni");
    let (a_cert, a_key) = pki.leaf("a", &["a.test"], false);
    let (b_cert, b_key) = pki.leaf("b", &["b.test", "*.b.test"], false);
    let up = Upstream::start("tls-sni", Mode::Echo);
    let listen = format!(
        "{{ addr = \"127.0.0.1:0\", tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}] }} }}",
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display()
    );
    let (_proxy, addr) = start_proxy(&config(&listen, up.addr(), ""));
    let config = pki.client_config();
    for (name, want) in [
        ("a.test", &a_cert),
        ("b.test", &b_cert),
        ("www.b.test", &b_cert),
    ] {
        let mut tls = tls_connect(config.clone(), addr, name)
            .unwrap_or_else(|e| panic!("handshake for {name}: {e}"));
        assert_eq!(peer_leaf(&tls), der_of(want), "the certificate for {name}");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut text = String::new();
        tls.read_to_string(&mut text).ok();
        assert!(text.starts_with("HTTP/1.1 200"), "{name}: {text:?}");
    }
    // A name no certificate has gets the first one, which the client then refuses.
    let err = tls_connect(config, addr, "other.test").expect_err("a.test's certificate");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn a_client_that_sends_plain_http_or_garbage_is_closed_and_the_worker_keeps_serving() {
    let pki = Pki::new("garbage");
    let (cert, key) = pki.leaf("a", &["a.test"], false);
    let up = Upstream::start("tls-garbage", Mode::Echo);
    let (_proxy, addr) = start_proxy(&config(&tls_listen(&cert, &key), up.addr(), ""));
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x00, 0x00, 0x00][..],
        &[0u8; 600][..],
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(junk).expect("send junk");
        let mut got = Vec::new();
        // An alert at most, then EOF (or a reset): never an HTTP answer.
        let _ = s.read_to_end(&mut got);
        assert!(!got.starts_with(b"HTTP/"), "answered in plaintext: {got:?}");
        assert!(got.len() < 64, "more than an alert: {} bytes", got.len());
    }
    let tls = tls_connect(pki.client_config(), addr, "a.test").expect("still serving");
    assert_eq!(Client::over(tls).get("/after").status, 200);
    assert_eq!(up.requests(), 1, "nothing of the junk reached the upstream");
}

#[test]
fn a_handshake_that_never_comes_is_closed_at_header_timeout() {
    let pki = Pki::new("slow");
    let (cert, key) = pki.leaf("a", &["a.test"], false);
    let up = Upstream::start("tls-slow", Mode::Echo);
    let (_proxy, addr) = start_proxy(&config(
        &tls_listen(&cert, &key),
        up.addr(),
        "header_timeout = \"300ms\"",
    ));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Half a ClientHello record header, then nothing.
    s.write_all(&[0x16, 0x03]).expect("send");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => assert!(n < 64, "read {n} bytes"),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "not closed: {e}"),
    }
    let tls = tls_connect(pki.client_config(), addr, "a.test").expect("still serving");
    assert_eq!(Client::over(tls).get("/").status, 200);
}

#[test]
fn redirect_https_answers_308_to_the_tls_listener() {
    let pki = Pki::new("redirect");
    let (cert, key) = pki.leaf("a", &["a.test"], false);
    let up = Upstream::start("tls-redirect", Mode::Echo);
    // `redirect_https` names the plain entry (the TLS one at the same text is another).
    let listen = format!("\"127.0.0.1:0\", {}", tls_listen(&cert, &key));
    let text = config(&listen, up.addr(), "redirect_https = \"127.0.0.1:0\"");
    let (proxy, _) = start_proxy(&text);
    let addrs = proxy.local_addrs();
    let (plain, secure) = (addrs[0], addrs[1]);
    let mut c = Client::connect(plain);
    let r = c.request(b"GET /a/b?x=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers.get("location"),
        Some(format!("https://a.test:{}/a/b?x=1", secure.port()).as_str())
    );
    assert!(!r.closes(), "a bodiless request keeps the connection");
    // A request with a body is answered and the connection closed, the body unread.
    let r = c.request(b"POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 308);
    assert!(r.closes());
    c.assert_closed();
    assert_eq!(up.requests(), 0, "nothing reached the upstream");
    let tls = tls_connect(pki.client_config(), secure, "a.test").expect("handshake");
    assert_eq!(Client::over(tls).get("/").status, 200);
}

#[test]
fn check_names_an_unreadable_certificate_and_a_key_that_is_not_its_own() {
    let pki = Pki::new("check");
    let (cert, _) = pki.leaf("a", &["a.test"], false);
    let (_, other_key) = pki.leaf("b", &["b.test"], false);
    let missing = pki.path("missing.pem");
    let up = dead_addr();
    for (cert, key, want) in [
        (
            &missing,
            &other_key,
            format!("cannot read {}", missing.display()),
        ),
        (
            &cert,
            &other_key,
            format!(
                "{} is not the private key of the certificate in {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            &cert,
            &cert,
            format!("{}: no PRIVATE KEY block", cert.display()),
        ),
    ] {
        let path = pki.path("check.toml");
        std::fs::write(&path, config(&tls_listen(cert, key), up, "")).expect("write");
        let out = std::process::Command::new(BIN)
            .args(["check", "-c", path.to_str().expect("UTF-8")])
            .output()
            .expect("run ringway check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "check passed: {stderr}");
        assert!(stderr.contains(&want), "wanted {want:?} in {stderr:?}");
        assert!(
            stderr.contains("server.listen.tls"),
            "names the key: {stderr}"
        );
    }
}

#[test]
fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
    let pki = Pki::new("reload");
    let (one, one_key) = pki.leaf("one", &["a.test"], false);
    let (two, two_key) = pki.leaf("two", &["a.test"], false);
    let up = Upstream::start("tls-reload", Mode::Echo);
    let bin = Binary::start(
        "tls-reload",
        &config(&tls_listen(&one, &one_key), up.addr(), ""),
    );
    let addr = bin.addr();
    let client = pki.client_config();
    let first = tls_connect(client.clone(), addr, "a.test").expect("handshake");
    assert_eq!(peer_leaf(&first), der_of(&one));
    // The reload keeps the listener (the same entry): only its certificate changes.
    let text = config(&tls_listen(&two, &two_key), up.addr(), "");
    let said = bin.reload(&text);
    assert!(said.contains("reload: generation 2"), "{said}");
    // Workers take the new generation at their next tick.
    let swapped = poll_until(Duration::from_secs(5), || {
        let second = tls_connect(client.clone(), addr, "a.test").expect("handshake");
        peer_leaf(&second) == der_of(&two)
    });
    assert!(swapped, "new connections get the new certificate");
    // The connection made before the reload carries on.
    assert_eq!(Client::over(first).get("/old").status, 200);
    let bad = text.replace(two_key.to_str().unwrap(), "/nonexistent/key.pem");
    let said = bin.reload(&bad);
    assert!(
        said.contains("reload refused") && said.contains("/nonexistent/key.pem"),
        "{said}"
    );
    let third = tls_connect(client, addr, "a.test").expect("handshake");
    assert_eq!(peer_leaf(&third), der_of(&two), "the old certificate stays");
}

#[test]
fn curl_fetches_through_tls_where_it_is_installed() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: the rustls client tests above cover TLS");
        return;
    }
    let pki = Pki::new("curl");
    let (cert, key) = pki.leaf("a", &["a.test"], false);
    let up = Upstream::start("tls-curl", Mode::Echo);
    let (_proxy, addr) = start_proxy(&config(&tls_listen(&cert, &key), up.addr(), ""));
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("a.test:{}:127.0.0.1", addr.port()))
        .arg(format!("https://a.test:{}/via-curl", addr.port()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(up.last().headers.get("x-forwarded-proto"), Some("https"));
}

// ---------------------------------------------------------------------------------
// TLS to upstreams
// ---------------------------------------------------------------------------------

/// An HTTPS origin on 127.0.0.1:0 (rustls, one thread per connection): answers every
/// request `200` with `sni=NAME` (the name the proxy sent, `-` for none), keep-alive.
struct TlsOrigin {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl TlsOrigin {
    fn start(cert: &Path, key: &Path) -> TlsOrigin {
        let files = vec![ringway::tls::CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }];
        let config = ringway::tls::ServerTls::load(files)
            .expect("origin certs")
            .config;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().expect("its address");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { break };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let config = config.clone();
                std::thread::spawn(move || https_answer(tcp, config));
            }
        });
        TlsOrigin { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn https_answer(tcp: TcpStream, config: Arc<rustls::ServerConfig>) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        buf.drain(..end + 4);
        let sni = tls.conn.server_name().unwrap_or("-").to_string();
        let body = format!("sni={sni}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if tls.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A one-worker config to group `secure` over `origin` with `tls` set to `tls`.
fn to_origin(origin: SocketAddr, tls: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n\
         [upstreams.secure]\nservers = [\"{origin}\"]\ntls = {tls}\nmax_fails = 1000\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"secure\"\n"
    )
}

#[test]
fn a_tls_upstream_is_verified_against_its_ca_and_its_sessions_are_pooled() {
    let pki = Pki::new("origin");
    let (cert, key) = pki.leaf("origin", &["127.0.0.1"], false);
    let origin = TlsOrigin::start(&cert, &key);
    let ca = pki.path("ca.pem");
    let tls = format!("{{ ca = \"{}\" }}", ca.display());
    let (_proxy, addr) = start_proxy(&to_origin(origin.addr, &tls));
    let mut c = Client::connect(addr);
    for _ in 0..5 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "sni=-", "an IP name sends no SNI");
    }
    assert_eq!(
        origin.accepted(),
        1,
        "five requests on one pooled TLS connection"
    );
}

#[test]
fn the_configured_sni_is_sent_and_checked() {
    let pki = Pki::new("origin-sni");
    let (cert, key) = pki.leaf("origin", &["backend.test"], false);
    let origin = TlsOrigin::start(&cert, &key);
    let ca = pki.path("ca.pem");
    let tls = format!("{{ sni = \"backend.test\", ca = \"{}\" }}", ca.display());
    let (_proxy, addr) = start_proxy(&to_origin(origin.addr, &tls));
    let r = Client::connect(addr).get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "sni=backend.test");
}

#[test]
fn a_wrong_name_or_an_expired_certificate_is_refused_unless_verify_is_off() {
    let pki = Pki::new("origin-bad");
    let (misnamed, misnamed_key) = pki.leaf("misnamed", &["other.test"], false);
    let (expired, expired_key) = pki.leaf("expired", &["backend.test"], true);
    let ca = pki.path("ca.pem");
    for (cert, key, what) in [
        (&misnamed, &misnamed_key, "a certificate for another name"),
        (&expired, &expired_key, "an expired certificate"),
    ] {
        let origin = TlsOrigin::start(cert, key);
        let strict = format!("{{ sni = \"backend.test\", ca = \"{}\" }}", ca.display());
        let (_proxy, addr) = start_proxy(&to_origin(origin.addr, &strict));
        let r = Client::connect(addr).get("/");
        assert_eq!(r.status, 502, "{what} must be refused: {r:?}");
        let lax = "{ sni = \"backend.test\", verify = false }";
        let (_proxy, addr) = start_proxy(&to_origin(origin.addr, lax));
        let r = Client::connect(addr).get("/");
        assert_eq!(r.status, 200, "{what} with verify = false: {r:?}");
    }
}

#[test]
fn tls_true_verifies_against_the_system_roots() {
    let pki = Pki::new("origin-system");
    let (cert, key) = pki.leaf("origin", &["127.0.0.1"], false);
    let origin = TlsOrigin::start(&cert, &key);
    let text = to_origin(origin.addr, "true");
    if std::env::var_os("SSL_CERT_FILE").is_none()
        && !Path::new("/etc/ssl/certs/ca-certificates.crt").exists()
    {
        // No bundle here (.ci/run installs ca-certificates): the config says so.
        let err = ringway::config::Config::parse(&text, "t.toml").expect_err("no roots");
        assert!(err.to_string().contains("no system CA bundle"), "{err}");
        return;
    }
    // The test CA is in no system bundle: the origin's certificate is not trusted.
    let (_proxy, addr) = start_proxy(&text);
    let r = Client::connect(addr).get("/");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(origin.accepted(), 1, "the handshake was tried once");
}

#[test]
fn a_plain_upstream_behind_tls_is_given_up_on_at_connect_timeout() {
    // This upstream waits for a request head that never comes (a ClientHello has no
    // blank line): the handshake counts against connect_timeout.
    let up = Upstream::start("plain-behind-tls", Mode::Ok);
    let text = to_origin(up.addr(), "{ verify = false }")
        .replace("max_fails", "connect_timeout = \"300ms\"\nmax_fails");
    let (_proxy, addr) = start_proxy(&text);
    let r = Client::connect(addr).get("/");
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(up.requests(), 0);
}

#[test]
fn active_health_checks_speak_tls_to_a_tls_group() {
    let pki = Pki::new("origin-health");
    let (cert, key) = pki.leaf("origin", &["127.0.0.1"], false);
    let origin = TlsOrigin::start(&cert, &key);
    let tls = format!("{{ ca = \"{}\" }}", pki.path("ca.pem").display());
    let text = to_origin(origin.addr, &tls).replace("max_fails = 1000\n", "")
        + "\n[upstreams.secure.health]\npath = \"/\"\ninterval = \"50ms\"\nfall = 1\nrise = 1\n";
    let text = text.replace(
        "\n[[routes]]",
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]",
    );
    let (proxy, addr) = start_proxy(&text);
    // Only the probe connects before any request: wait for several of its checks.
    assert!(poll_until(Duration::from_secs(5), || origin.accepted() >= 1));
    std::thread::sleep(Duration::from_millis(300));
    let status = crate::admin::json(&crate::admin::call(
        proxy.admin_addr().expect("admin"),
        "GET",
        "/status",
        None,
    ));
    let server = &status["upstreams"]["secure"]["servers"][0];
    assert_eq!(server["state"], "up", "{server}");
    assert_eq!(
        origin.accepted(),
        1,
        "one kept-alive TLS connection for every check"
    );
    assert_eq!(Client::connect(addr).get("/").status, 200);
}
