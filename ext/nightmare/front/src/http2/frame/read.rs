//! A client's frames, checked against their type's rules (RFC 9113 §6).
//! What breaks a rule is an `H2Error` scoped as the RFC says; unknown types
//! pass as `Unknown` for the caller to ignore (§4.1). The order of frames
//! (CONTINUATION after HEADERS, streams' states) is the session's concern.

use super::{FrameHeader, LARGEST_WINDOW, flag, kind};
use crate::http2::error_code::{ErrorCode, H2Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub depends_on: u32,
    pub exclusive: bool,
    pub weight: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
        /// The whole payload, padding included: what flow control counts.
        flow_controlled: u32,
    },
    Headers {
        stream: u32,
        fragment: &'a [u8],
        end_stream: bool,
        end_headers: bool,
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        code: ErrorCode,
    },
    SettingsAck,
    /// Six bytes per setting; read them with `settings`.
    Settings {
        payload: &'a [u8],
    },
    PushPromise,
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: ErrorCode,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        fragment: &'a [u8],
        end_headers: bool,
    },
    Unknown {
        kind: u8,
    },
}

/// A frame longer than the front's SETTINGS_MAX_FRAME_SIZE is refused from
/// its header, before its payload is read or kept.
pub fn check_length(header: &FrameHeader, max_frame_size: u32) -> Result<(), H2Error> {
    if header.length > max_frame_size {
        return Err(H2Error::connection(ErrorCode::FRAME_SIZE_ERROR, "a frame exceeds SETTINGS_MAX_FRAME_SIZE"));
    }
    Ok(())
}

/// Reads one frame whose payload is all there.
pub fn read<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<Frame<'a>, H2Error> {
    let stream = header.stream;
    let on_stream_zero = |why| if stream == 0 { Err(protocol(why)) } else { Ok(()) };
    let off_stream_zero = |why| if stream != 0 { Err(protocol(why)) } else { Ok(()) };
    let exact = |length: usize, why| if payload.len() != length { Err(frame_size(why)) } else { Ok(()) };
    match header.kind {
        kind::DATA => {
            on_stream_zero("DATA on stream 0")?;
            let data = unpad(header, payload)?;
            Ok(Frame::Data { stream, data, end_stream: header.has(flag::END_STREAM), flow_controlled: header.length })
        }
        kind::HEADERS => {
            on_stream_zero("HEADERS on stream 0")?;
            let mut fragment = unpad(header, payload)?;
            if header.has(flag::PRIORITY) {
                let priority =
                    read_priority(fragment).ok_or_else(|| frame_size("HEADERS too short for its priority"))?;
                if priority.depends_on == stream {
                    return Err(H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, "a stream depends on itself"));
                }
                fragment = &fragment[5..];
            }
            Ok(Frame::Headers {
                stream,
                fragment,
                end_stream: header.has(flag::END_STREAM),
                end_headers: header.has(flag::END_HEADERS),
            })
        }
        kind::PRIORITY => {
            on_stream_zero("PRIORITY on stream 0")?;
            if payload.len() != 5 {
                return Err(H2Error::stream(stream, ErrorCode::FRAME_SIZE_ERROR, "PRIORITY is not 5 bytes"));
            }
            match read_priority(payload) {
                Some(priority) if priority.depends_on == stream => {
                    Err(H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, "a stream depends on itself"))
                }
                _ => Ok(Frame::Priority { stream }),
            }
        }
        kind::RST_STREAM => {
            on_stream_zero("RST_STREAM on stream 0")?;
            exact(4, "RST_STREAM is not 4 bytes")?;
            Ok(Frame::RstStream { stream, code: ErrorCode(be32(payload)) })
        }
        kind::SETTINGS => {
            off_stream_zero("SETTINGS on a stream")?;
            if header.has(flag::ACK) {
                exact(0, "a SETTINGS ack has a payload")?;
                return Ok(Frame::SettingsAck);
            }
            if payload.len() % 6 != 0 {
                return Err(frame_size("SETTINGS is not a multiple of 6 bytes"));
            }
            Ok(Frame::Settings { payload })
        }
        kind::PUSH_PROMISE => Ok(Frame::PushPromise),
        kind::PING => {
            off_stream_zero("PING on a stream")?;
            exact(8, "PING is not 8 bytes")?;
            let mut data = [0; 8];
            data.copy_from_slice(payload);
            Ok(Frame::Ping { ack: header.has(flag::ACK), data })
        }
        kind::GOAWAY => {
            off_stream_zero("GOAWAY on a stream")?;
            if payload.len() < 8 {
                return Err(frame_size("GOAWAY is under 8 bytes"));
            }
            Ok(Frame::GoAway { last_stream: be32(payload) & LARGEST_WINDOW, code: ErrorCode(be32(&payload[4..])) })
        }
        kind::WINDOW_UPDATE => {
            exact(4, "WINDOW_UPDATE is not 4 bytes")?;
            let increment = be32(payload) & LARGEST_WINDOW;
            match (increment, stream) {
                (0, 0) => Err(protocol("a WINDOW_UPDATE of 0 for the connection")),
                (0, _) => Err(H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")),
                _ => Ok(Frame::WindowUpdate { stream, increment }),
            }
        }
        kind::CONTINUATION => {
            on_stream_zero("CONTINUATION on stream 0")?;
            Ok(Frame::Continuation { stream, fragment: payload, end_headers: header.has(flag::END_HEADERS) })
        }
        other => Ok(Frame::Unknown { kind: other }),
    }
}

/// A SETTINGS payload's identifier and value pairs.
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|pair| (u16::from_be_bytes([pair[0], pair[1]]), be32(&pair[2..])))
}

/// The payload without its padding (§6.1): a pad length byte first, and
/// that many bytes at the end, which must leave something or nothing.
fn unpad<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], H2Error> {
    if !header.has(flag::PADDED) {
        return Ok(payload);
    }
    let (&pad_length, rest) =
        payload.split_first().ok_or_else(|| frame_size("a padded frame without its pad length"))?;
    let end =
        rest.len().checked_sub(usize::from(pad_length)).ok_or_else(|| protocol("padding as long as the frame"))?;
    Ok(&rest[..end])
}

fn read_priority(bytes: &[u8]) -> Option<Priority> {
    let bytes = bytes.get(..5)?;
    let word = be32(bytes);
    Some(Priority { depends_on: word & LARGEST_WINDOW, exclusive: word & !LARGEST_WINDOW != 0, weight: bytes[4] })
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn protocol(why: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::PROTOCOL_ERROR, why)
}

fn frame_size(why: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::FRAME_SIZE_ERROR, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> FrameHeader {
        FrameHeader { length: payload.len() as u32, kind, flags, stream }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame<'_>, H2Error> {
        read(&header(kind, flags, stream, payload), payload)
    }

    fn code(result: Result<Frame, H2Error>) -> (ErrorCode, bool) {
        match result {
            Err(H2Error::Connection { code, .. }) => (code, true),
            Err(H2Error::Stream { code, .. }) => (code, false),
            Ok(frame) => panic!("read as {frame:?}"),
        }
    }

    #[test]
    fn the_header_reads_its_fields_and_drops_the_reserved_bit() {
        let bytes = [0x00, 0x40, 0x01, 0x01, 0x05, 0x80, 0x00, 0x00, 0x03];
        let expected = FrameHeader { length: 16385, kind: kind::HEADERS, flags: 0x05, stream: 3 };
        assert_eq!(FrameHeader::parse(&bytes), Some(expected));
        assert_eq!(FrameHeader::parse(&bytes[..8]), None);
        assert_eq!(
            code(check_length(&expected, 16384).map(|_| Frame::SettingsAck)),
            (ErrorCode::FRAME_SIZE_ERROR, true)
        );
    }

    #[test]
    fn padding_is_taken_off_and_padding_too_long_is_a_protocol_error() {
        let padded = [2, b'h', b'i', 0, 0];
        let read = frame(kind::DATA, flag::PADDED | flag::END_STREAM, 1, &padded).unwrap();
        assert_eq!(read, Frame::Data { stream: 1, data: b"hi", end_stream: true, flow_controlled: 5 });
        assert_eq!(code(frame(kind::DATA, flag::PADDED, 1, &[4, 0, 0, 0])), (ErrorCode::PROTOCOL_ERROR, true));
        assert_eq!(code(frame(kind::DATA, flag::PADDED, 1, &[])), (ErrorCode::FRAME_SIZE_ERROR, true));
        let headers = [1, 0x82, 0];
        assert_eq!(
            frame(kind::HEADERS, flag::PADDED | flag::END_HEADERS, 3, &headers).unwrap(),
            Frame::Headers { stream: 3, fragment: &[0x82], end_stream: false, end_headers: true }
        );
    }

    #[test]
    fn a_headers_priority_is_skipped_and_may_not_point_at_its_own_stream() {
        let with_priority = [0x80, 0, 0, 1, 15, 0x82];
        let read = frame(kind::HEADERS, flag::PRIORITY | flag::END_HEADERS, 3, &with_priority).unwrap();
        assert_eq!(read, Frame::Headers { stream: 3, fragment: &[0x82], end_stream: false, end_headers: true });
        let on_itself = [0, 0, 0, 3, 15, 0x82];
        assert_eq!(code(frame(kind::HEADERS, flag::PRIORITY, 3, &on_itself)), (ErrorCode::PROTOCOL_ERROR, false));
        assert_eq!(code(frame(kind::PRIORITY, 0, 5, &[0, 0, 0, 5, 0])), (ErrorCode::PROTOCOL_ERROR, false));
        assert_eq!(code(frame(kind::PRIORITY, 0, 5, &[0, 0, 0, 1])), (ErrorCode::FRAME_SIZE_ERROR, false));
    }

    #[test]
    fn each_type_keeps_to_its_stream_and_its_length() {
        let connection = |result| code(result).1;
        for (kind, flags, stream, payload) in [
            (kind::DATA, 0, 0, &[][..]),
            (kind::HEADERS, 0, 0, &[0x82][..]),
            (kind::RST_STREAM, 0, 0, &[0, 0, 0, 8][..]),
            (kind::SETTINGS, 0, 1, &[][..]),
            (kind::PING, 0, 1, &[0; 8][..]),
            (kind::GOAWAY, 0, 1, &[0; 8][..]),
            (kind::CONTINUATION, 0, 0, &[][..]),
        ] {
            assert_eq!(
                code(frame(kind, flags, stream, payload)),
                (ErrorCode::PROTOCOL_ERROR, true),
                "type {kind} on stream {stream}"
            );
        }
        for (kind, flags, stream, payload) in [
            (kind::RST_STREAM, 0, 1, &[0, 0, 8][..]),
            (kind::SETTINGS, 0, 0, &[0; 5][..]),
            (kind::SETTINGS, flag::ACK, 0, &[0; 6][..]),
            (kind::PING, 0, 0, &[0; 7][..]),
            (kind::GOAWAY, 0, 0, &[0; 7][..]),
            (kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1][..]),
        ] {
            assert_eq!(
                code(frame(kind, flags, stream, payload)),
                (ErrorCode::FRAME_SIZE_ERROR, true),
                "type {kind}, {} bytes",
                payload.len()
            );
        }
        assert!(connection(frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])));
        assert!(!connection(frame(kind::WINDOW_UPDATE, 0, 7, &[0, 0, 0, 0])), "0 for a stream ends the stream");
        assert_eq!(
            frame(kind::WINDOW_UPDATE, 0, 7, &[0x80, 0, 0, 9]).unwrap(),
            Frame::WindowUpdate { stream: 7, increment: 9 }
        );
    }

    #[test]
    fn control_frames_read_as_the_rfc_lays_them_out() {
        let settings_payload = [0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0];
        let Frame::Settings { payload } = frame(kind::SETTINGS, 0, 0, &settings_payload).unwrap() else { panic!() };
        assert_eq!(settings(payload).collect::<Vec<_>>(), [(3, 100), (4, 65536)]);
        assert_eq!(frame(kind::SETTINGS, flag::ACK, 0, &[]).unwrap(), Frame::SettingsAck);
        assert_eq!(
            frame(kind::PING, flag::ACK, 0, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
            Frame::Ping { ack: true, data: [1, 2, 3, 4, 5, 6, 7, 8] }
        );
        let goaway = [0x80, 0, 0, 7, 0, 0, 0, 2, b'b', b'y', b'e'];
        assert_eq!(
            frame(kind::GOAWAY, 0, 0, &goaway).unwrap(),
            Frame::GoAway { last_stream: 7, code: ErrorCode::INTERNAL_ERROR }
        );
        assert_eq!(
            frame(kind::RST_STREAM, 0, 9, &[0, 0, 0, 8]).unwrap(),
            Frame::RstStream { stream: 9, code: ErrorCode::CANCEL }
        );
        assert_eq!(frame(0xfa, 0xff, 0, b"anything").unwrap(), Frame::Unknown { kind: 0xfa });
        assert_eq!(frame(kind::PUSH_PROMISE, 0, 2, b"").unwrap(), Frame::PushPromise);
    }
}
