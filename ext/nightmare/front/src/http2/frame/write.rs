//! The frames the front sends, appended to an output buffer.

use super::{HEADER_LEN, flag, kind};
use crate::http2::error_code::ErrorCode;

pub fn frame_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(length < 1 << 24);
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

pub fn settings(out: &mut Vec<u8>, values: &[(u16, u32)]) {
    frame_header(out, values.len() * 6, kind::SETTINGS, 0, 0);
    for (id, value) in values {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn settings_ack(out: &mut Vec<u8>) {
    frame_header(out, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn ping_ack(out: &mut Vec<u8>, data: &[u8; 8]) {
    frame_header(out, 8, kind::PING, flag::ACK, 0);
    out.extend_from_slice(data);
}

pub fn goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode) {
    frame_header(out, 8, kind::GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
}

pub fn rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    frame_header(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&code.0.to_be_bytes());
}

pub fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    frame_header(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

/// A header block as HEADERS and, past the peer's frame size, CONTINUATION
/// frames (§6.10), back to back as the RFC requires.
pub fn headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max_frame_size: u32) {
    let mut pieces = block.chunks(max_frame_size as usize).peekable();
    let mut frame_kind = kind::HEADERS;
    let end_stream = if end_stream { flag::END_STREAM } else { 0 };
    loop {
        let piece = pieces.next().unwrap_or_default();
        let last = pieces.peek().is_none();
        let end_headers = if last { flag::END_HEADERS } else { 0 };
        let flags = end_headers | if frame_kind == kind::HEADERS { end_stream } else { 0 };
        frame_header(out, piece.len(), frame_kind, flags, stream);
        out.extend_from_slice(piece);
        if last {
            return;
        }
        frame_kind = kind::CONTINUATION;
    }
}

/// A DATA frame's header; its payload follows from wherever it is.
pub fn data_header(out: &mut Vec<u8>, stream: u32, length: usize, end_stream: bool) {
    frame_header(out, length, kind::DATA, if end_stream { flag::END_STREAM } else { 0 }, stream);
}

/// Bytes a DATA frame of `length` takes on the wire.
pub fn data_frame_len(length: usize) -> usize {
    HEADER_LEN + length
}

#[cfg(test)]
mod tests {
    use super::super::FrameHeader;
    use super::super::read::{Frame, read};
    use super::*;

    /// Splits written bytes back into frames, as a client would.
    fn frames(mut bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut found = Vec::new();
        while let Some(header) = FrameHeader::parse(bytes) {
            let end = HEADER_LEN + header.length as usize;
            found.push((header, bytes[HEADER_LEN..end].to_vec()));
            bytes = &bytes[end..];
        }
        assert!(bytes.is_empty(), "whole frames only");
        found
    }

    #[test]
    fn control_frames_read_back() {
        let mut out = Vec::new();
        settings(&mut out, &[(3, 128), (4, 65535)]);
        settings_ack(&mut out);
        ping_ack(&mut out, b"12345678");
        goaway(&mut out, 7, ErrorCode::ENHANCE_YOUR_CALM);
        rst_stream(&mut out, 5, ErrorCode::REFUSED_STREAM);
        window_update(&mut out, 0, 1 << 20);
        let read: Vec<String> =
            frames(&out).iter().map(|(header, payload)| format!("{:?}", read(header, payload).unwrap())).collect();
        assert_eq!(
            read,
            [
                format!("{:?}", Frame::Settings { payload: &[0, 3, 0, 0, 0, 128, 0, 4, 0, 0, 255, 255] }),
                format!("{:?}", Frame::SettingsAck),
                format!("{:?}", Frame::Ping { ack: true, data: *b"12345678" }),
                format!("{:?}", Frame::GoAway { last_stream: 7, code: ErrorCode::ENHANCE_YOUR_CALM }),
                format!("{:?}", Frame::RstStream { stream: 5, code: ErrorCode::REFUSED_STREAM }),
                format!("{:?}", Frame::WindowUpdate { stream: 0, increment: 1 << 20 }),
            ]
        );
    }

    #[test]
    fn a_large_block_continues_and_only_the_last_frame_ends_the_headers() {
        let block: Vec<u8> = (0..40u8).collect();
        let mut out = Vec::new();
        headers(&mut out, 3, &block, true, 16);
        let written = frames(&out);
        let kinds: Vec<(u8, u8, usize)> =
            written.iter().map(|(header, payload)| (header.kind, header.flags, payload.len())).collect();
        assert_eq!(
            kinds,
            [
                (kind::HEADERS, flag::END_STREAM, 16),
                (kind::CONTINUATION, 0, 16),
                (kind::CONTINUATION, flag::END_HEADERS, 8)
            ]
        );
        assert_eq!(written.iter().flat_map(|(_, payload)| payload.clone()).collect::<Vec<_>>(), block);
        out.clear();
        headers(&mut out, 1, &[0x88], false, 16384);
        assert_eq!(out, [0, 0, 1, kind::HEADERS, flag::END_HEADERS, 0, 0, 0, 1, 0x88]);
        out.clear();
        data_header(&mut out, 1, 3, true);
        assert_eq!(out.len() + 3, data_frame_len(3));
        assert_eq!(
            FrameHeader::parse(&out),
            Some(FrameHeader { length: 3, kind: kind::DATA, flags: flag::END_STREAM, stream: 1 })
        );
    }
}
