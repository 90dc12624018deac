//! A strict, bounded decoder for `Transfer-Encoding: chunked` request bodies
//! (RFC 9112 §7.1). Strict because leniency here (bare LF, odd sizes) is how
//! requests get smuggled past a proxy; bounded so a client cannot make the
//! front buffer framing without end.

use std::ops::Range;

/// Longest chunk-size line (size, extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted; trailers are read and dropped, since the
/// worker gets the body with a Content-Length.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    Malformed(&'static str),
    /// The decoded body would exceed the allowed size.
    TooLarge,
}

/// One step of decoding: `consumed` bytes of the input were used, and
/// `data` (a range within them) is body data.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub consumed: usize,
    pub data: Range<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: usize,
    },
    /// Whitespace after the size: only a `;` extension may follow.
    AfterSize {
        size: u64,
    },
    /// Inside `*( BWS ";" BWS name [ BWS "=" BWS value ] )`.
    Extension {
        size: u64,
        at: ExtensionPart,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    TrailerLine {
        length: usize,
    },
    TrailerLf {
        line_was_empty: bool,
    },
    Done,
}

/// Where in a chunk extension the decoder is (RFC 9112 §7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExtensionPart {
    BeforeName,
    Name,
    AfterName,
    BeforeValue,
    Token,
    Quoted,
    QuotedPair,
    QuoteClosed,
    AfterValue,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    size_line: usize,
    trailer_bytes: usize,
    decoded: u64,
    max_body: Option<u64>,
}

impl ChunkedDecoder {
    /// `max_body` of `None` means no limit.
    pub fn new(max_body: Option<u64>) -> Self {
        ChunkedDecoder {
            state: State::Size { value: 0, digits: 0 },
            size_line: 0,
            trailer_bytes: 0,
            decoded: 0,
            max_body,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Decodes from the start of `input` until the next run of body data, the
    /// end of the body, or the end of the input; call again with the rest.
    /// After the body is done, bytes left over belong to the next request.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            if let State::Data { remaining } = self.state {
                let available = (input.len() - at) as u64;
                let take = remaining.min(available) as usize;
                let left = remaining - take as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data { remaining: left } };
                return Ok(Decoded { consumed: at + take, data: at..at + take });
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[at])?;
            at += 1;
        }
        Ok(Decoded { consumed: at, data: at..at })
    }

    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { value, digits } => {
                self.count_size_line()?;
                match hex_value(byte) {
                    Some(digit) => {
                        let value = value
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(u64::from(digit)))
                            .ok_or(ChunkError::Malformed("chunk size overflows"))?;
                        State::Size { value, digits: digits + 1 }
                    }
                    None if digits == 0 => return Err(ChunkError::Malformed("chunk size missing")),
                    None => self.after_size(value, byte)?,
                }
            }
            State::AfterSize { size } => {
                self.count_size_line()?;
                match byte {
                    b' ' | b'\t' => State::AfterSize { size },
                    b';' => State::Extension { size, at: ExtensionPart::BeforeName },
                    _ => return Err(ChunkError::Malformed("whitespace after a chunk size without an extension")),
                }
            }
            State::Extension { size, at } => {
                self.count_size_line()?;
                match extension_step(at, byte)? {
                    Some(at) => State::Extension { size, at },
                    None => State::SizeLf { size },
                }
            }
            State::SizeLf { size } => {
                expect(byte, b'\n', "chunk size line not ended by CRLF")?;
                self.size_line = 0;
                if size == 0 {
                    State::TrailerLine { length: 0 }
                } else {
                    self.decoded = self.decoded.checked_add(size).ok_or(ChunkError::TooLarge)?;
                    if self.max_body.is_some_and(|max| self.decoded > max) {
                        return Err(ChunkError::TooLarge);
                    }
                    State::Data { remaining: size }
                }
            }
            State::DataCr => {
                expect(byte, b'\r', "chunk data not followed by CRLF")?;
                State::DataLf
            }
            State::DataLf => {
                expect(byte, b'\n', "chunk data not followed by CRLF")?;
                State::Size { value: 0, digits: 0 }
            }
            State::TrailerLine { length } => {
                self.count_trailer_byte()?;
                match byte {
                    b'\r' => State::TrailerLf { line_was_empty: length == 0 },
                    b'\n' => return Err(ChunkError::Malformed("trailer line not ended by CRLF")),
                    _ => State::TrailerLine { length: length + 1 },
                }
            }
            State::TrailerLf { line_was_empty } => {
                self.count_trailer_byte()?;
                expect(byte, b'\n', "trailer line not ended by CRLF")?;
                if line_was_empty { State::Done } else { State::TrailerLine { length: 0 } }
            }
            State::Data { .. } | State::Done => unreachable!("handled by decode"),
        };
        Ok(())
    }

    fn after_size(&self, size: u64, byte: u8) -> Result<State, ChunkError> {
        match byte {
            b' ' | b'\t' => Ok(State::AfterSize { size }),
            b';' => Ok(State::Extension { size, at: ExtensionPart::BeforeName }),
            b'\r' => Ok(State::SizeLf { size }),
            _ => Err(ChunkError::Malformed("bad chunk size")),
        }
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError::Malformed("trailer section too large"));
        }
        Ok(())
    }

    fn count_size_line(&mut self) -> Result<(), ChunkError> {
        self.size_line += 1;
        if self.size_line > MAX_SIZE_LINE {
            return Err(ChunkError::Malformed("chunk size line too long"));
        }
        Ok(())
    }
}

/// One byte of `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`;
/// `None` when the CR that ends the size line arrives where it may.
fn extension_step(at: ExtensionPart, byte: u8) -> Result<Option<ExtensionPart>, ChunkError> {
    use ExtensionPart::*;
    let whitespace = matches!(byte, b' ' | b'\t');
    let next = match (at, byte) {
        (BeforeName, _) if whitespace => BeforeName,
        (BeforeName, _) if is_token_byte(byte) => Name,
        (BeforeName, _) => return Err(ChunkError::Malformed("chunk extension without a name")),
        (Name, _) if is_token_byte(byte) => Name,
        (Name | Token | QuoteClosed, b'\r') => return Ok(None),
        (AfterName | AfterValue, b'\r') => {
            return Err(ChunkError::Malformed("whitespace at the end of a chunk extension"));
        }
        (Name | AfterName, b'=') => BeforeValue,
        (Name, _) | (AfterName, _) if whitespace => AfterName,
        (Name | AfterName | Token | QuoteClosed | AfterValue, b';') => BeforeName,
        (BeforeValue, _) if whitespace => BeforeValue,
        (BeforeValue, b'"') => Quoted,
        (BeforeValue, _) if is_token_byte(byte) => Token,
        (BeforeValue, _) => return Err(ChunkError::Malformed("chunk extension without a value")),
        (Token, _) if is_token_byte(byte) => Token,
        (Token | QuoteClosed | AfterValue, _) if whitespace => AfterValue,
        (Quoted, b'"') => QuoteClosed,
        (Quoted, b'\\') => QuotedPair,
        (Quoted, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff) => Quoted,
        (QuotedPair, b'\t' | b' '..=0x7e | 0x80..=0xff) => Quoted,
        _ => return Err(ChunkError::Malformed("bad chunk extension")),
    };
    Ok(Some(next))
}

/// RFC 9110's `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn expect(byte: u8, wanted: u8, complaint: &'static str) -> Result<(), ChunkError> {
    if byte == wanted { Ok(()) } else { Err(ChunkError::Malformed(complaint)) }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the body and
    /// the bytes left after it.
    fn decode_in_pieces(input: &[u8], piece: usize, max: Option<u64>) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut decoder = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let mut leftover = Vec::new();
        for slice in input.chunks(piece) {
            let mut rest = slice;
            while !rest.is_empty() {
                if decoder.is_done() {
                    leftover.extend_from_slice(rest);
                    break;
                }
                let step = decoder.decode(rest)?;
                body.extend_from_slice(&rest[step.data.clone()]);
                rest = &rest[step.consumed..];
            }
        }
        assert!(decoder.is_done(), "body should be complete");
        assert_eq!(decoder.decoded_len(), body.len() as u64);
        Ok((body, leftover))
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for piece in [1, 2, 7, input.len()] {
            let (body, leftover) = decode_in_pieces(input, piece, None).unwrap();
            assert_eq!(body, b"hello 0123456789");
            assert_eq!(leftover, b"NEXT");
        }
    }

    const EXTENSIONS: [&str; 6] = ["", ";a", ";a=b", " ; n = v", ";q=\"x \\\" y\"", ";a;b=1;c"];

    /// A random body, chunked at random with random legal extensions and
    /// trailers, followed by the next request.
    fn chunked_body(noise: &mut crate::test_support::Noise) -> (Vec<u8>, Vec<u8>) {
        let body: Vec<u8> = (0..noise.below(300)).map(|_| noise.next() as u8).collect();
        let mut wire = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let take = 1 + noise.below(rest.len().min(70));
            let size = if noise.below(2) == 0 { format!("{take:x}") } else { format!("{take:X}") };
            wire.extend(format!("{size}{}\r\n", EXTENSIONS[noise.below(EXTENSIONS.len())]).bytes());
            wire.extend_from_slice(&rest[..take]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[take..];
        }
        wire.extend(format!("0{}\r\n", EXTENSIONS[noise.below(EXTENSIONS.len())]).bytes());
        for _ in 0..noise.below(3) {
            wire.extend_from_slice(b"X-Trailer: t\r\n");
        }
        wire.extend_from_slice(b"\r\nNEXT");
        (body, wire)
    }

    #[test]
    fn fuzzed_legal_bodies_decode_to_what_was_sent_in_any_pieces() {
        let make = |noise: &mut crate::test_support::Noise| {
            let (body, wire) = chunked_body(noise);
            (wire, body)
        };
        crate::test_support::fuzz(3, 5_000, make, |wire, body, noise| {
            let mut decoded = Vec::new();
            let mut decoder = ChunkedDecoder::new(None);
            let mut leftover = Vec::new();
            for piece in noise.pieces(wire) {
                let mut rest = piece;
                while !rest.is_empty() {
                    if decoder.is_done() {
                        leftover.extend_from_slice(rest);
                        break;
                    }
                    let step = decoder.decode(rest).expect("a legal body");
                    decoded.extend_from_slice(&rest[step.data.clone()]);
                    rest = &rest[step.consumed..];
                }
            }
            assert!(decoder.is_done());
            assert_eq!(&decoded, body);
            assert_eq!(leftover, b"NEXT");
        });
    }

    /// Edited legal bodies: no panic, each step within its input, and the
    /// decoded bytes never more than the input held.
    #[test]
    fn fuzzed_broken_bodies_are_refused_or_decoded_within_their_input() {
        let words: [&[u8]; 10] =
            [b"\r\n", b"\n", b";", b"=", b" ", b"\"", b"ffffffffffffffff", b"0\r\n\r\n", b"\x00", b"5"];
        let make = |noise: &mut crate::test_support::Noise| {
            let (_, wire) = chunked_body(noise);
            (noise.mutate(&wire, &words), ())
        };
        crate::test_support::fuzz(11, 30_000, make, |input, (), noise| {
            let mut decoder = ChunkedDecoder::new(Some(1 << 20));
            let mut data = 0;
            'pieces: for mut piece in noise.pieces(input) {
                while !piece.is_empty() && !decoder.is_done() {
                    let Ok(step) = decoder.decode(piece) else { break 'pieces };
                    assert!(step.data.start <= step.data.end && step.data.end <= step.consumed);
                    assert!(step.consumed <= piece.len() && step.consumed > 0);
                    data += step.data.len();
                    piece = &piece[step.consumed..];
                }
            }
            assert!(data <= input.len());
            assert!(decoder.decoded_len() >= data as u64);
        });
    }

    #[test]
    fn whitespace_before_extension_is_allowed() {
        let (body, _) = decode_in_pieces(b"3 ;ext\r\nabc\r\n0\r\n\r\n", 3, None).unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn extensions_follow_the_rfc_grammar() {
        for size_line in
            ["3;a", "3;a=b", "3 ; a = b", "3;a=b;c;d=\"q \\\" ;x\"", "3;a=\"\"", "3;!#$%&'*+-.^_`|~=v", "3;a=b ;c"]
        {
            let input = format!("{size_line}\r\nabc\r\n0\r\n\r\n");
            let decoded = decode_in_pieces(input.as_bytes(), 1, None);
            assert_eq!(decoded.map(|(body, _)| body), Ok(b"abc".to_vec()), "{size_line:?}");
        }
        for size_line in [
            "3 ",
            "3;",
            "3; ",
            "3;;a",
            "3;=b",
            "3;a=",
            "3;a b",
            "3;a=b c",
            "3;a=b ",
            "3;a ",
            "3;a=\"open",
            "3;a=\"x\"y",
            "3;a@b",
            "3;a=b@c",
            "3;a=\"\x01\"",
        ] {
            let input = format!("{size_line}\r\nabc\r\n0\r\n\r\n");
            assert!(
                matches!(decode_in_pieces(input.as_bytes(), 1, None), Err(ChunkError::Malformed(_))),
                "{size_line:?} should be rejected"
            );
        }
    }

    #[test]
    fn bad_sizes_are_malformed() {
        for input in [&b"g\r\n"[..], b"\r\n", b"-1\r\n", b"1 2\r\n", b"11111111111111111\r\n"] {
            assert!(
                matches!(ChunkedDecoder::new(None).decode(input), Err(ChunkError::Malformed(_))),
                "{:?} should be rejected",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bare_lf_is_malformed() {
        assert!(decode_in_pieces(b"3\nabc\r\n0\r\n\r\n", 1, None).is_err());
        assert!(decode_in_pieces(b"3\r\nabc\n0\r\n\r\n", 1, None).is_err());
        assert!(decode_in_pieces(b"0\r\nX: y\n\r\n", 1, None).is_err());
    }

    #[test]
    fn size_limit_is_checked_before_the_data_arrives() {
        let mut decoder = ChunkedDecoder::new(Some(10));
        assert_eq!(decoder.decode(b"5\r\n").unwrap().consumed, 3);
        let step = decoder.decode(b"12345\r\n").unwrap();
        assert_eq!(step.data, 0..5);
        assert_eq!(decoder.decode(b"\r\n6\r\n"), Err(ChunkError::TooLarge));
    }

    #[test]
    fn endless_size_lines_and_trailers_are_cut_off() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'x', MAX_SIZE_LINE));
        assert!(ChunkedDecoder::new(None).decode(&long_ext).is_err());

        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 100 {
            trailers.extend(b"X-T: y\r\n");
        }
        assert!(ChunkedDecoder::new(None).decode(&trailers).is_err());
    }
}
