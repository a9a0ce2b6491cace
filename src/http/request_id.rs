//! `RequestId`: the id a request carries in `X-Request-Id` and `$request_id`, inline so
//! a request head stays allocation-free.

/// A request id: the client's (when short and printable) or a generated one.
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    bytes: [u8; 64],
    len: u8,
}

impl RequestId {
    /// No id.
    pub const NONE: RequestId = RequestId {
        bytes: [0; 64],
        len: 0,
    };

    /// Takes a client's id when it is short visible ASCII, which is safe to echo in headers.
    pub fn from_client(v: &[u8]) -> Option<RequestId> {
        if v.is_empty() || v.len() > 64 || !v.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut id = RequestId::NONE;
        id.bytes[..v.len()].copy_from_slice(v);
        id.len = v.len() as u8;
        Some(id)
    }

    /// A new id: 16 hex digits unique to the worker's run, then its request counter.
    pub fn generate(prefix: u64, seq: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = RequestId::NONE;
        for (i, v) in [prefix, seq].into_iter().enumerate() {
            for k in 0..16 {
                id.bytes[i * 16 + k] = HEX[(v >> (60 - 4 * k) & 0xf) as usize];
            }
        }
        id.len = 32;
        id
    }

    /// The id's text (empty for none).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_printable_and_short() {
        assert_eq!(
            RequestId::from_client(b"abc-1").unwrap().as_bytes(),
            b"abc-1"
        );
        assert!(RequestId::from_client(b"").is_none());
        assert!(RequestId::from_client(b"a b").is_none());
        assert!(RequestId::from_client(&[b'x'; 65]).is_none());
    }

    #[test]
    fn generated_ids_are_32_hex_digits() {
        let id = RequestId::generate(0x0123_4567_89ab_cdef, 1);
        assert_eq!(id.as_bytes(), b"0123456789abcdef0000000000000001");
    }
}
