//! The PROXY protocol (HAProxy's, versions 1 and 2) as a listener with
//! `proxy_protocol = true` reads it: the header an L4 balancer puts before the client's
//! bytes, naming the client. Parsing only, on bytes; the worker reads them
//! (`proxy::serve_proxied`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most bytes a header may take: version 1's maximum (107) and a version 2 header with
/// a few TLVs (HAProxy sends authority, SSL and unique-id TLVs well under this).
pub const MAX_HEADER: usize = 1024;

/// The version 2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length: the client's own bytes start after it.
    pub len: usize,
    /// The client's address; `None` for `LOCAL` / `UNKNOWN` (the balancer's own
    /// connection, e.g. a health check): the peer's address stands.
    pub source: Option<SocketAddr>,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// More bytes are needed.
    Incomplete,
    /// They are not a valid header.
    Bad(&'static str),
}

/// Parses a version 1 or 2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Header, Invalid> {
    if buf.is_empty() {
        return Err(Invalid::Incomplete);
    }
    if buf[0] == b'\r' {
        let n = buf.len().min(V2_SIG.len());
        if buf[..n] != V2_SIG[..n] {
            return Err(Invalid::Bad("not a PROXY header"));
        }
        return parse_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err(Invalid::Bad("not a PROXY header"));
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Header, Invalid> {
    const MAX_V1: usize = 107;
    let Some(end) = buf.windows(2).take(MAX_V1 - 1).position(|w| w == b"\r\n") else {
        return match buf.len() >= MAX_V1 {
            true => Err(Invalid::Bad("PROXY v1 line too long")),
            false => Err(Invalid::Incomplete),
        };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| Invalid::Bad("PROXY v1 not ASCII"))?;
    let mut parts = line.split(' ');
    let bad = Invalid::Bad("malformed PROXY v1 line");
    let family = parts.next().ok_or(bad)?;
    if family == "UNKNOWN" {
        return Ok(Header {
            len: end + 2,
            source: None,
        });
    }
    let (Some(src), Some(_dst), Some(sport), Some(_dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad);
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse::<Ipv4Addr>().map_err(|_| bad)?),
        "TCP6" => IpAddr::V6(src.parse::<Ipv6Addr>().map_err(|_| bad)?),
        _ => return Err(bad),
    };
    let port = parse_port(sport).ok_or(bad)?;
    Ok(Header {
        len: end + 2,
        source: Some(SocketAddr::new(ip, port)),
    })
}

/// A decimal port without sign or leading zeros.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Header, Invalid> {
    if buf.len() < 16 {
        return Err(Invalid::Incomplete);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(Invalid::Bad("PROXY v2 with an unknown version"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_HEADER {
        return Err(Invalid::Bad("PROXY v2 header too long"));
    }
    if buf.len() < len {
        return Err(Invalid::Incomplete);
    }
    let body = &buf[16..len];
    let source = match (ver_cmd & 0x0f, fam) {
        // LOCAL: the balancer's own connection.
        (0, _) => None,
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 0x21) if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(a).into(), port))
        }
        // UNSPEC family, or UDP / unix sockets: nothing usable about the client.
        (1, 0x00) => None,
        (1, 0x11 | 0x21) => return Err(Invalid::Bad("PROXY v2 address block too short")),
        (1, _) => None,
        _ => return Err(Invalid::Bad("PROXY v2 with an unknown command")),
    };
    Ok(Header { len, source })
}

/// A version 2 header for `source` → `dest` (for upstreams that want one).
pub fn v2_header(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIG.to_vec();
    out.push(0x21);
    match (source.ip().to_canonical(), dest.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&dest.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_names_the_client_and_what_follows_is_left() {
        let raw = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let h = parse(raw).unwrap();
        assert_eq!(h.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(&raw[h.len..h.len + 3], b"GET");
        let v6 = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap();
        assert_eq!(v6.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().source, None);
        for cut in 0..raw.len().min(40) {
            assert_eq!(parse(&raw[..cut]), Err(Invalid::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn version_1_garbage_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Invalid::Bad(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 120][..]].concat();
        assert!(matches!(parse(&long), Err(Invalid::Bad(_))));
    }

    #[test]
    fn version_2_round_trips_and_local_keeps_the_peer() {
        let src: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut raw = v2_header(src, dst);
        let len = raw.len();
        raw.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&raw),
            Ok(Header {
                len,
                source: Some(src)
            })
        );
        for cut in 0..len {
            assert_eq!(parse(&raw[..cut]), Err(Invalid::Incomplete), "cut at {cut}");
        }
        let six: SocketAddr = "[2001:db8::5]:1234".parse().unwrap();
        assert_eq!(parse(&v2_header(six, dst)).unwrap().source, Some(six));
        let mut local = v2_header(src, dst);
        local[12] = 0x20;
        assert_eq!(parse(&local).unwrap().source, None);
        let mut bad = v2_header(src, dst);
        bad[12] = 0x31;
        assert!(matches!(parse(&bad), Err(Invalid::Bad(_))));
    }
}
