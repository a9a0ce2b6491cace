//! Request path normalization before routing: percent-decoding of unreserved
//! characters, merging of repeated slashes and removal of `.`/`..` segments, so that
//! `/test/../admin` or `/%61dmin` reach exactly the route `/admin` would, no other.
//!
//! The forwarded target is the normalized path, so the upstream sees what was routed.
//! Other percent-escapes (`%2F`, `%00`) stay encoded, with upper-case hex digits.

/// Why a path was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// True when `path` needs no work, the common case that costs one scan and no copy.
fn is_normal(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // `/.` starts a dot segment when followed by `/`, end, or `./`/`.` end.
                let rest = &path[i + 1..];
                if rest.is_empty()
                    || rest[0] == b'/'
                    || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
                {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Normalizes an origin-form path (starting with `/`, no query).
///
/// Returns `Ok(false)` when it is already normal (`out` untouched), `Ok(true)` when the
/// normalized path was written to `out`, and `Err` for a malformed percent-escape.
pub fn normalize(path: &str, out: &mut Vec<u8>) -> Result<bool, BadPath> {
    let bytes = path.as_bytes();
    if is_normal(bytes) {
        return Ok(false);
    }
    out.clear();
    out.push(b'/');
    let mut segments = bytes[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        decode_segment(seg, out)?;
        match &out[start..] {
            // Empty segments merge; a final one keeps the trailing slash already written.
            b"" => {}
            b"." => out.truncate(start),
            b".." => {
                out.truncate(start);
                if out.len() > 1 {
                    out.pop();
                    let parent = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                    out.truncate(parent + 1);
                }
            }
            _ if !last => out.push(b'/'),
            _ => {}
        }
    }
    Ok(true)
}

/// Appends `seg` with `%XX` decoded when it stands for an unreserved character.
fn decode_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), BadPath> {
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            seg.get(i + 1).and_then(|&c| hex(c)),
            seg.get(i + 2).and_then(|&c| hex(c)),
        ) else {
            return Err(BadPath);
        };
        let c = h << 4 | l;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
        }
        i += 3;
    }
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, BadPath> {
        let mut out = Vec::new();
        Ok(match normalize(p, &mut out)? {
            false => p.to_string(),
            true => String::from_utf8(out).unwrap(),
        })
    }

    #[test]
    fn normal_paths_are_left_alone() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/a.b/c..d/.e",
            "/..a",
            "/a/b.",
            "/file.tar.gz",
        ] {
            let mut out = Vec::new();
            assert_eq!(normalize(p, &mut out), Ok(false), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        assert_eq!(norm("/test/../admin").unwrap(), "/admin");
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/../../x").unwrap(), "/x");
        assert_eq!(norm("/..").unwrap(), "/");
        assert_eq!(norm("//a///b//").unwrap(), "/a/b/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_kept() {
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/x/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(norm("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        assert_eq!(norm("/%7Euser").unwrap(), "/~user");
        assert_eq!(norm("/bad%2"), Err(BadPath));
        assert_eq!(norm("/bad%zz"), Err(BadPath));
    }
}
