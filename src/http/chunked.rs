//! Chunked transfer coding: a strict decoder and the re-framing encoder.
//!
//! The proxy never forwards chunk-size lines or extensions as received: it decodes
//! to data and writes fresh framing. The decoder is stricter than httparse's
//! `parse_chunk_size` (which accepts an empty size, any byte in extensions, and
//! sizes up to u64::MAX): a size is 1 to 16 hex digits, extensions are visible
//! ASCII, lines end in CRLF exactly, and trailers are bounded and discarded.

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Total trailer bytes accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk-size line is not 1-16 hex digits with valid extensions and CRLF.
    #[error("invalid chunk size line")]
    BadSize,
    /// Chunk data was not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    BadDelimiter,
    /// A size or trailer line is over its limit.
    #[error("chunk line too long")]
    TooLong,
    /// A trailer line is malformed.
    #[error("invalid trailer")]
    BadTrailer,
}

/// What one `decode` call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `input[start..end]` is body data; `end` bytes of input are consumed.
    Data {
        /// First data byte.
        start: usize,
        /// One past the last data byte; also the count of consumed bytes.
        end: usize,
    },
    /// More input is needed; `consumed` framing bytes may be dropped.
    NeedMore {
        /// Bytes of input consumed.
        consumed: usize,
    },
    /// The body is complete; `consumed` bytes (framing and trailers) belong to it.
    Done {
        /// Bytes of input consumed.
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Incremental decoder over whatever bytes have arrived so far.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            trailer_bytes: 0,
        }
    }

    /// True once the terminating chunk and trailers were consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Call again with the unconsumed rest.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok(Step::Done { consumed: pos }),
                State::Size => {
                    let Some(line) = take_line(rest, MAX_SIZE_LINE)? else {
                        return Ok(Step::NeedMore { consumed: pos });
                    };
                    let size = parse_size_line(&rest[..line])?;
                    pos += line + 2;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(Step::NeedMore { consumed: pos });
                    }
                    let n = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data {
                        start: pos,
                        end: pos + n,
                    });
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(ChunkError::BadDelimiter);
                        }
                        return Ok(Step::NeedMore { consumed: pos });
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::BadDelimiter);
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    let Some(line) = take_line(rest, MAX_TRAILERS)? else {
                        return Ok(Step::NeedMore { consumed: pos });
                    };
                    self.trailer_bytes += line + 2;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ChunkError::TooLong);
                    }
                    if line == 0 {
                        self.state = State::Done;
                    } else {
                        check_trailer(&rest[..line])?;
                    }
                    pos += line + 2;
                }
            }
        }
    }
}

/// Finds a CRLF-terminated line; returns its length without the CRLF.
/// A bare LF, or a CR not followed by LF, is an error: lenient line endings are a
/// classic request-smuggling vector.
fn take_line(input: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'\n' => return Err(ChunkError::BadSize),
            b'\r' => {
                return match input.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(ChunkError::BadSize),
                    None => Ok(None),
                };
            }
            _ if i >= max => return Err(ChunkError::TooLong),
            _ => {}
        }
    }
    if input.len() > max {
        return Err(ChunkError::TooLong);
    }
    Ok(None)
}

fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::BadSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        // 16 hex digits always fit in u64, so plain shifts cannot overflow.
        let v = (b as char).to_digit(16).ok_or(ChunkError::BadSize)?;
        size = (size << 4) | u64::from(v);
    }
    let mut ext = &line[digits..];
    // Optional whitespace before extensions is tolerated (RFC 9112 BWS), nothing else.
    while let [b' ' | b'\t', r @ ..] = ext {
        ext = r;
    }
    if ext.is_empty() {
        return Ok(size);
    }
    if ext[0] != b';'
        || !ext
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(ChunkError::BadSize);
    }
    Ok(size)
}

fn check_trailer(line: &[u8]) -> Result<(), ChunkError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ChunkError::BadTrailer)?;
    let name_ok = colon > 0 && line[..colon].iter().all(|&b| b.is_ascii_graphic());
    let value_ok = line[colon + 1..]
        .iter()
        .all(|&b| b == b'\t' || b >= b' ' && b != 0x7f);
    if name_ok && value_ok {
        Ok(())
    } else {
        Err(ChunkError::BadTrailer)
    }
}

/// Appends the framing line for a chunk of `len` data bytes (the caller adds data, then CRLF).
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The terminating chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` delivered in pieces of `step` bytes, as a relay would see it.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut dec = ChunkedDecoder::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut out = Vec::new();
        let mut consumed_total = 0;
        loop {
            match dec.decode(&pending)? {
                Step::Data { start, end } => {
                    out.extend_from_slice(&pending[start..end]);
                    pending.drain(..end);
                    consumed_total += end;
                }
                Step::NeedMore { consumed } => {
                    pending.drain(..consumed);
                    consumed_total += consumed;
                    if fed >= input.len() {
                        return Err(ChunkError::BadSize);
                    }
                    let next = (fed + step).min(input.len());
                    pending.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
                Step::Done { consumed } => {
                    consumed_total += consumed;
                    return Ok((out, consumed_total));
                }
            }
        }
    }

    #[test]
    fn decodes_at_every_split_point() {
        let body = b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (out, used) = decode_in_steps(body, step).unwrap();
            assert_eq!(out, b"hello world", "step {step}");
            assert_eq!(
                used,
                body.len() - 4,
                "step {step}: the next message is not eaten"
            );
        }
    }

    #[test]
    fn rejects_malformed_sizes_and_delimiters() {
        for bad in [
            &b"\r\nhello\r\n0\r\n\r\n"[..],
            b"zz\r\n",
            b"12345678901234567\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5;\x00\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                decode_in_steps(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_huge_but_valid_size_decodes_without_overflow() {
        let mut dec = ChunkedDecoder::new();
        let step = dec.decode(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(step, Step::Data { start: 18, end: 20 });
    }

    #[test]
    fn chunk_headers_are_lowercase_hex() {
        let mut out = Vec::new();
        write_chunk_header(&mut out, 0);
        write_chunk_header(&mut out, 255);
        write_chunk_header(&mut out, 4096);
        assert_eq!(out, b"0\r\nff\r\n1000\r\n");
    }
}
