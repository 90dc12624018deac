//! What a stream's connection writes (an HTTP/1.1 response, as the front
//! writes one to any client: a worker's reframed, a file, a canned reply)
//! becomes HTTP/2: each head a HEADERS block, the body's bytes DATA, its end
//! END_STREAM. Taken piece by piece, so the session frames a body only as
//! far as the client's window goes and the rest stays unread behind it.

use crate::http::chunked::ChunkedDecoder;
use crate::http2::hpack;

/// Hop-by-hop fields, which HTTP/2 forbids (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Ends when the stream's connection closes its side.
    UntilEnd,
}

#[derive(Debug)]
enum Stage {
    Head,
    Body(Body),
    Done,
}

/// One step of translation.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Nothing to take yet (more bytes needed, or no room for data).
    Nothing,
    /// A head, HPACK-coded; `end_stream` when no body follows. Interim
    /// (1xx) heads come before the final one.
    Head { block: Vec<u8>, status: u16, end_stream: bool },
    /// Body bytes at this range of the input, the last ones if `end_stream`.
    Data { range: std::ops::Range<usize>, end_stream: bool },
    /// The body is complete, with no bytes to go with its end.
    End,
}

/// Body bytes, the end alone, or nothing.
fn data(range: std::ops::Range<usize>, end_stream: bool) -> Piece {
    match (range.is_empty(), end_stream) {
        (false, _) => Piece::Data { range, end_stream },
        (true, true) => Piece::End,
        (true, false) => Piece::Nothing,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

#[derive(Debug)]
pub struct ResponseFrames {
    stage: Stage,
    head_request: bool,
    max_head: usize,
}

impl ResponseFrames {
    pub fn new(head_request: bool, max_head: usize) -> Self {
        ResponseFrames { stage: Stage::Head, head_request, max_head }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// Takes from the start of `input`: gives how many bytes were used and
    /// what they were, with at most `data_room` bytes of body.
    pub fn take(&mut self, input: &[u8], data_room: usize) -> Result<(usize, Piece), Malformed> {
        match &mut self.stage {
            Stage::Head => self.take_head(input),
            Stage::Body(Body::Length(remaining)) => {
                let take = (*remaining).min(input.len() as u64).min(data_room as u64) as usize;
                *remaining -= take as u64;
                let end_stream = *remaining == 0;
                if end_stream {
                    self.stage = Stage::Done;
                }
                Ok((take, data(0..take, end_stream)))
            }
            Stage::Body(Body::Chunked(decoder)) => {
                // Framing bytes count against the room too: what is given
                // can hold no more data than the room.
                let window = &input[..input.len().min(data_room)];
                let decoded = decoder.decode(window).map_err(|_| Malformed("malformed chunked body"))?;
                let end_stream = decoder.is_done();
                if end_stream {
                    self.stage = Stage::Done;
                }
                Ok((decoded.consumed, data(decoded.data, end_stream)))
            }
            Stage::Body(Body::UntilEnd) => {
                let take = input.len().min(data_room);
                Ok((take, data(0..take, false)))
            }
            Stage::Done => Ok((input.len(), Piece::Nothing)),
        }
    }

    /// The stream's connection closed its side: a body that runs until then
    /// is complete; any other unfinished response was cut short.
    pub fn finish(&mut self) -> Result<Piece, Malformed> {
        match self.stage {
            Stage::Body(Body::UntilEnd) => {
                self.stage = Stage::Done;
                Ok(Piece::End)
            }
            Stage::Done => Ok(Piece::Nothing),
            _ => Err(Malformed("response cut short")),
        }
    }

    fn take_head(&mut self, input: &[u8]) -> Result<(usize, Piece), Malformed> {
        let Some(end) = input.windows(4).position(|window| window == b"\r\n\r\n").map(|at| at + 4) else {
            if input.len() > self.max_head {
                return Err(Malformed("response head too large"));
            }
            return Ok((0, Piece::Nothing));
        };
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&input[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Malformed("malformed response head")),
        }
        let status = response.code.ok_or(Malformed("no status"))?;
        let mut block = Vec::with_capacity(end / 2);
        hpack::encode_status(&mut block, status);
        let (mut length, mut chunked) = (None, false);
        for header in response.headers.iter() {
            let lower = header.name.to_ascii_lowercase();
            if lower == "transfer-encoding" {
                chunked = true;
            } else if lower == "content-length" {
                length = std::str::from_utf8(header.value).ok().and_then(|text| text.trim().parse::<u64>().ok());
            }
            if !CONNECTION_SPECIFIC.contains(&lower.as_str()) {
                hpack::encode_field(&mut block, header.name.as_bytes(), header.value);
            }
        }
        if (100..200).contains(&status) {
            // Interim: the final head is still to come.
            return Ok((end, Piece::Head { block, status, end_stream: false }));
        }
        let bodiless = self.head_request || status == 204 || status == 304;
        let body = match (bodiless, chunked, length) {
            (true, _, _) | (false, false, Some(0)) => None,
            (false, true, _) => Some(Body::Chunked(ChunkedDecoder::new(None))),
            (false, false, Some(length)) => Some(Body::Length(length)),
            (false, false, None) => Some(Body::UntilEnd),
        };
        self.stage = body.map_or(Stage::Done, Stage::Body);
        Ok((end, Piece::Head { block, status, end_stream: self.is_done() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(block: &[u8]) -> Vec<(String, String)> {
        let mut found = Vec::new();
        hpack::Decoder::new(0)
            .decode(block, usize::MAX, |name, value| {
                found.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()))
            })
            .unwrap();
        found
    }

    /// Runs the whole input through with `room` bytes of data at a time.
    fn translate(head_request: bool, input: &[u8], room: usize, closed: bool) -> (Vec<(u16, bool)>, Vec<u8>, bool) {
        let mut frames = ResponseFrames::new(head_request, 4096);
        let (mut heads, mut body, mut ended, mut at) = (Vec::new(), Vec::new(), false, 0);
        loop {
            let (used, piece) = frames.take(&input[at..], room).unwrap();
            match piece {
                Piece::Head { status, end_stream, .. } => {
                    heads.push((status, end_stream));
                    ended |= end_stream;
                }
                Piece::Data { range, end_stream } => {
                    body.extend_from_slice(&input[at..][range]);
                    ended |= end_stream;
                }
                Piece::End => ended = true,
                Piece::Nothing if used == 0 => break,
                Piece::Nothing => {}
            }
            at += used;
            if frames.is_done() && at == input.len() {
                break;
            }
        }
        if closed && !frames.is_done() {
            ended |= frames.finish().unwrap() == Piece::End;
        }
        (heads, body, ended)
    }

    #[test]
    fn a_head_becomes_hpack_without_the_hop_by_hop_fields() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\r\nhi";
        let mut frames = ResponseFrames::new(false, 4096);
        let (used, Piece::Head { block, status: 200, end_stream: false }) = frames.take(input, 100).unwrap() else {
            panic!()
        };
        let expected =
            [(":status", "200"), ("content-type", "text/plain"), ("content-length", "2"), ("set-cookie", "a=1")];
        let expected: Vec<(String, String)> = expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(fields(&block), expected);
        assert_eq!(frames.take(&input[used..], 100).unwrap(), (2, Piece::Data { range: 0..2, end_stream: true }));
        assert!(frames.is_done(), "the length reached ends the body");
    }

    #[test]
    fn bodies_come_in_the_room_given_whatever_their_framing() {
        let length = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        assert_eq!(translate(false, length, 3, false), (vec![(200, false)], b"0123456789".to_vec(), true));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n";
        for room in [1, 3, 64] {
            assert_eq!(
                translate(false, chunked, room, false),
                (vec![(200, false)], b"abcdefghij".to_vec(), true),
                "room {room}"
            );
        }
        let until_end = b"HTTP/1.1 200 OK\r\n\r\nstream of bytes";
        assert_eq!(translate(false, until_end, 4, true), (vec![(200, false)], b"stream of bytes".to_vec(), true));
    }

    #[test]
    fn heads_that_end_the_stream_and_interim_ones_that_do_not() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(translate(true, head, 64, false), (vec![(200, true)], vec![], true), "HEAD");
        for status in ["204 No Content", "304 Not Modified"] {
            let input = format!("HTTP/1.1 {status}\r\nETag: x\r\n\r\n");
            assert!(translate(false, input.as_bytes(), 64, false).2, "{status}");
        }
        let empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(translate(false, empty, 64, false), (vec![(200, true)], vec![], true));
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(translate(false, early, 64, false), (vec![(103, false), (200, false)], b"x".to_vec(), true));
    }

    #[test]
    fn no_room_takes_nothing_and_broken_responses_are_named() {
        let mut frames = ResponseFrames::new(false, 4096);
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (used, _) = frames.take(input, 0).unwrap();
        assert_eq!(frames.take(&input[used..], 0).unwrap(), (0, Piece::Nothing));
        assert_eq!(frames.finish(), Err(Malformed("response cut short")));
        let mut frames = ResponseFrames::new(false, 16);
        assert_eq!(
            frames.take(b"HTTP/1.1 200 OK\r\nX: a long enough value", 1).unwrap_err(),
            Malformed("response head too large")
        );
        let mut frames = ResponseFrames::new(false, 4096);
        assert!(frames.take(b"nonsense\r\n\r\n", 1).is_err());
    }
}
