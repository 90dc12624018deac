use std::time::{Duration, Instant};

use super::*;
use crate::http2::frame::read::settings;
use crate::http2::frame::{FrameHeader, HEADER_LEN, flag, kind};
use crate::http2::hpack;

/// A client's side, written with the front's own encoder and frame writer.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write::frame_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn opening(settings_payload: &[u8]) -> Vec<u8> {
    [PREFACE, &frame(kind::SETTINGS, 0, 0, settings_payload)].concat()
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    fields.iter().for_each(|(name, value)| hpack::encode_field(&mut block, name.as_bytes(), value.as_bytes()));
    block
}

fn get(path: &str) -> Vec<u8> {
    block(&[(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", path)])
}

fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    frame(kind::HEADERS, flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 }, stream, block)
}

fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(kind::DATA, if end_stream { flag::END_STREAM } else { 0 }, stream, bytes)
}

/// What the session sent, as frames, taking it all.
fn sent(session: &mut Session) -> Vec<(FrameHeader, Vec<u8>)> {
    let bytes = session.output().to_vec();
    session.sent(bytes.len());
    let mut rest = &bytes[..];
    let mut frames = Vec::new();
    while let Some(header) = FrameHeader::parse(rest) {
        let end = HEADER_LEN + header.length as usize;
        frames.push((header, rest[HEADER_LEN..end].to_vec()));
        rest = &rest[end..];
    }
    assert!(rest.is_empty());
    frames
}

fn kinds(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(u8, u32)> {
    frames.iter().map(|(header, _)| (header.kind, header.stream)).collect()
}

fn goaway_code(frames: &[(FrameHeader, Vec<u8>)]) -> Option<ErrorCode> {
    frames
        .iter()
        .find(|(header, _)| header.kind == kind::GOAWAY)
        .map(|(_, payload)| ErrorCode(u32::from_be_bytes(payload[4..8].try_into().unwrap())))
}

fn rst_code(frames: &[(FrameHeader, Vec<u8>)], stream: u32) -> Option<ErrorCode> {
    frames
        .iter()
        .find(|(header, _)| header.kind == kind::RST_STREAM && header.stream == stream)
        .map(|(_, payload)| ErrorCode(u32::from_be_bytes(payload[..4].try_into().unwrap())))
}

fn read_all(session: &mut Session, stream: u32) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 7];
    while let Ok(read) = session.read_request(stream, &mut buf) {
        if read == 0 {
            break;
        }
        text.extend_from_slice(&buf[..read]);
    }
    String::from_utf8(text).unwrap()
}

fn started() -> (Session, Instant) {
    let now = Instant::now();
    let mut session = Session::new(Config::default(), now);
    session.receive(&opening(&[]), now).unwrap();
    (session, now)
}

#[test]
fn the_front_speaks_first_and_acknowledges_the_clients_settings() {
    let (mut session, _) = started();
    let frames = sent(&mut session);
    assert_eq!(kinds(&frames), [(kind::SETTINGS, 0), (kind::WINDOW_UPDATE, 0), (kind::SETTINGS, 0)]);
    assert!(frames[2].0.has(flag::ACK));
    let ours: Vec<(u16, u32)> = settings(&frames[0].1).collect();
    assert!(ours.contains(&(setting::MAX_CONCURRENT_STREAMS, 128)) && ours.contains(&(setting::ENABLE_PUSH, 0)));
}

#[test]
fn a_bad_preface_or_a_first_frame_other_than_settings_ends_the_connection() {
    let now = Instant::now();
    let mut session = Session::new(Config::default(), now);
    assert!(session.receive(b"GET / HTTP/1.1\r\n", now).is_err());
    assert_eq!(goaway_code(&sent(&mut session)), Some(ErrorCode::PROTOCOL_ERROR));
    let mut session = Session::new(Config::default(), now);
    assert!(session.receive(&[PREFACE, &frame(kind::PING, 0, 0, &[0; 8])].concat(), now).is_err());
    let mut session = Session::new(Config::default(), now);
    session.receive(&PREFACE[..10], now).unwrap();
    session.receive(&opening(&[])[10..], now).unwrap();
    assert_eq!(goaway_code(&sent(&mut session)), None, "a preface in pieces is fine");
}

#[test]
fn a_get_becomes_a_request_and_its_response_comes_back_framed() {
    let (mut session, now) = started();
    sent(&mut session);
    session.receive(&headers(1, &get("/a"), true), now).unwrap();
    assert_eq!(session.take_opened(), [1]);
    assert_eq!(read_all(&mut session, 1), "GET /a HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n");
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(session.write_response(1, response).unwrap(), response.len());
    session.end_response(1);
    let frames = sent(&mut session);
    assert_eq!(kinds(&frames), [(kind::HEADERS, 1), (kind::DATA, 1)]);
    assert!(frames[1].0.has(flag::END_STREAM));
    assert_eq!(frames[1].1, b"hello");
    assert_eq!(session.read_request(1, &mut [0; 8]).unwrap(), 0, "end of file once the response is out");
    session.release(1);
    assert_eq!(session.stream_count(), 0);
}

#[test]
fn an_upload_without_length_comes_as_one_chunk_per_read_and_reading_it_opens_the_window() {
    let now = Instant::now();
    let mut session = Session::new(Config { connection_window: 200_000, ..Config::default() }, now);
    session.receive(&opening(&[]), now).unwrap();
    sent(&mut session);
    let put = block(&[(":method", "PUT"), (":scheme", "https"), (":authority", "a"), (":path", "/up")]);
    session.receive(&headers(3, &put, false), now).unwrap();
    let piece = vec![b'x'; 16 * 1024];
    for _ in 0..8 {
        session.receive(&data(3, &piece, false), now).unwrap();
    }
    session.receive(&data(3, b"end", true), now).unwrap();
    let text = read_all(&mut session, 3);
    // Nine DATA frames before the first read: one chunk of 8 * 16 KiB + 3.
    let head = "PUT /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let body = format!("20003\r\n{}end\r\n0\r\n\r\n", "x".repeat(8 * 16 * 1024));
    assert_eq!(text, format!("{head}{body}"));
    let frames = sent(&mut session);
    assert_eq!(kinds(&frames), [(kind::WINDOW_UPDATE, 0)], "the stream is done, so only the connection's window opens");
    assert_eq!(u32::from_be_bytes(frames[0].1[..4].try_into().unwrap()), 8 * 16 * 1024 + 3);
}

#[test]
fn one_byte_data_frames_cost_no_framing_each() {
    let (mut session, now) = started();
    let put = block(&[(":method", "PUT"), (":scheme", "https"), (":authority", "a"), (":path", "/up")]);
    session.receive(&headers(1, &put, false), now).unwrap();
    let frames: Vec<u8> = (0..4096).flat_map(|_| data(1, b"y", false)).collect();
    session.receive(&frames, now).unwrap();
    assert!(session.held_bytes() < 64 * 1024, "4,096 bytes held as 4,096 bytes, not 4,096 chunks");
    session.receive(&data(1, b"", true), now).unwrap();
    let text = read_all(&mut session, 1);
    assert!(text.ends_with(&format!("\r\n\r\n1000\r\n{}\r\n0\r\n\r\n", "y".repeat(4096))), "one chunk");
}

#[test]
fn data_past_a_window_or_a_length_is_refused() {
    let (mut session, now) = started();
    sent(&mut session);
    let post = block(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "a"),
        (":path", "/"),
        ("content-length", "2"),
    ]);
    session.receive(&headers(1, &post, false), now).unwrap();
    session.receive(&data(1, b"abc", true), now).unwrap();
    assert_eq!(rst_code(&sent(&mut session), 1), Some(ErrorCode::PROTOCOL_ERROR));
    session.receive(&headers(3, &post, false), now).unwrap();
    session.receive(&data(3, b"a", true), now).unwrap();
    assert_eq!(rst_code(&sent(&mut session), 3), Some(ErrorCode::PROTOCOL_ERROR), "short of its length");
    let config = Config { stream_window: 10, ..Config::default() };
    let mut session = Session::new(config, now);
    session.receive(&opening(&[]), now).unwrap();
    let upload = block(&[(":method", "PUT"), (":scheme", "https"), (":authority", "a"), (":path", "/")]);
    session.receive(&headers(1, &upload, false), now).unwrap();
    session.receive(&data(1, &[0; 11], false), now).unwrap();
    assert_eq!(rst_code(&sent(&mut session), 1), Some(ErrorCode::FLOW_CONTROL_ERROR));
}

#[test]
fn a_slow_reader_gets_what_its_window_allows_and_the_stream_waits_for_the_rest() {
    let now = Instant::now();
    let config = Config { stream_buffer: 100, ..Config::default() };
    let mut session = Session::new(config, now);
    // The client's streams may take 10 bytes until it says more.
    session.receive(&opening(&[0, 4, 0, 0, 0, 10]), now).unwrap();
    session.receive(&headers(1, &get("/big"), true), now).unwrap();
    sent(&mut session);
    let response = [&b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n"[..], &[b'z'; 300]].concat();
    let taken = session.write_response(1, &response).unwrap();
    assert_eq!(taken, 100, "no more than stream_buffer ahead of the client");
    assert_eq!(session.write_response(1, &response[taken..]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let frames = sent(&mut session);
    assert_eq!(kinds(&frames), [(kind::HEADERS, 1), (kind::DATA, 1)]);
    assert_eq!(frames[1].1.len(), 10);
    assert!(session.take_wakes().contains(&1), "its connection may write again");
    session.receive(&frame(kind::WINDOW_UPDATE, 0, 1, &1000u32.to_be_bytes()), now).unwrap();
    let frames = sent(&mut session);
    assert_eq!(
        frames.iter().map(|(_, payload)| payload.len()).sum::<usize>(),
        100 - 40 - 10,
        "the rest of what it holds"
    );
}

#[test]
fn a_full_buffer_waits_for_a_socket_that_takes_bytes_and_spools_for_one_that_does_not() {
    let now = Instant::now();
    let config = Config { stream_buffer: 100, ..Config::default() };
    let mut session = Session::new(config.clone(), now);
    session.receive(&opening(&[]), now).unwrap();
    session.receive(&headers(1, &get("/big"), true), now).unwrap();
    sent(&mut session);
    let response = [&b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n"[..], &[b'z'; 300]].concat();
    assert_eq!(session.write_response(1, &response).unwrap(), 100);
    assert!(session.drains_soon(1), "windows and socket take the buffer: its connection waits");
    session.take_wakes();
    session.note_socket_blocked(true);
    assert!(!session.drains_soon(1), "a blocked socket: its connection spools");
    assert_eq!(session.take_wakes(), [1], "woken to spool, so its worker goes free");
    session.note_socket_blocked(false);
    assert!(session.drains_soon(1));

    // Windows closed while the socket still takes bytes: nothing can be
    // framed, so the waiting stream is woken to spool.
    sent(&mut session);
    assert_eq!(session.write_response(1, &response[100..]).unwrap(), 100, "the buffer full again");
    session.take_wakes();
    session.receive(&frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]), now).unwrap();
    let frames = sent(&mut session);
    assert!(!frames.iter().any(|(header, _)| header.kind == kind::DATA), "the windows let nothing out");
    assert!(!session.drains_soon(1));
    assert!(session.take_wakes().contains(&1), "woken though nothing was framed");

    // A window smaller than the buffer (a client trickling updates) gets no wait.
    let mut session = Session::new(config, now);
    session.receive(&opening(&[0, 4, 0, 0, 0, 99]), now).unwrap();
    session.receive(&headers(1, &get("/big"), true), now).unwrap();
    assert_eq!(session.write_response(1, &response).unwrap(), 100);
    assert!(!session.drains_soon(1));
}

#[test]
fn frames_between_a_header_block_and_endless_continuations_end_the_connection() {
    let (mut session, now) = started();
    let opening_half = frame(kind::HEADERS, 0, 1, &get("/")[..2]);
    let ping = frame(kind::PING, 0, 0, &[0; 8]);
    assert!(session.receive(&[opening_half.clone(), ping].concat(), now).is_err());
    assert_eq!(goaway_code(&sent(&mut session)), Some(ErrorCode::PROTOCOL_ERROR));
    let (mut session, now) = started();
    let empty_continuations: Vec<u8> = (0..100).flat_map(|_| frame(kind::CONTINUATION, 0, 1, &[])).collect();
    assert!(session.receive(&[opening_half, empty_continuations].concat(), now).is_err());
    assert_eq!(goaway_code(&sent(&mut session)), Some(ErrorCode::ENHANCE_YOUR_CALM));
}

#[test]
fn rapid_reset_goes_away_and_reset_streams_reach_no_connection() {
    let (mut session, now) = started();
    let mut attack = Vec::new();
    for stream in (1..2000).step_by(2) {
        attack.extend(headers(stream, &get("/"), true));
        attack.extend(frame(kind::RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    assert!(session.receive(&attack, now).is_err());
    assert_eq!(goaway_code(&sent(&mut session)), Some(ErrorCode::ENHANCE_YOUR_CALM));
    assert!(session.take_opened().is_empty(), "streams reset before they were read are never served");
    assert!(session.tally().streams_reset_by_client > 256);
    // Resets at a pace are another matter.
    let (mut session, mut now) = started();
    for stream in (1..2000).step_by(2) {
        now += Duration::from_millis(20);
        session
            .receive(
                &[headers(stream, &get("/"), true), frame(kind::RST_STREAM, 0, stream, &8u32.to_be_bytes())].concat(),
                now,
            )
            .unwrap();
    }
}

#[test]
fn streams_past_the_limit_are_refused_and_count_until_their_connections_end() {
    let (mut session, now) = started();
    sent(&mut session);
    let many: Vec<u8> = (0..129).flat_map(|n| headers(2 * n + 1, &get("/"), true)).collect();
    session.receive(&many, now).unwrap();
    assert_eq!(session.take_opened().len(), 128);
    assert_eq!(rst_code(&sent(&mut session), 257), Some(ErrorCode::REFUSED_STREAM));
    assert_eq!(session.tally().streams_refused, 1);
}

#[test]
fn a_header_list_past_the_limit_gets_431_and_the_table_stays_in_step() {
    let in_frames = |block: &[u8], stream: u32| -> Vec<u8> {
        let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
        let count = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .flat_map(|(at, piece)| {
                let (kind, flags) = if at == 0 { (kind::HEADERS, flag::END_STREAM) } else { (kind::CONTINUATION, 0) };
                frame(kind, flags | if at + 1 == count { flag::END_HEADERS } else { 0 }, stream, piece)
            })
            .collect()
    };
    let (mut session, now) = started();
    sent(&mut session);
    // 40 KiB of list (past 32 KiB) in 35 KiB of block, and last a small
    // field indexed, which the table must keep.
    let mut huge = get("/");
    let two_kib = "v".repeat(2048);
    for n in 0..20 {
        huge.extend(block(&[(&format!("x-big-{n}"), two_kib.as_str())]));
    }
    huge.push(0x40);
    huge.extend(block(&[("x-small", "kept")])[1..].iter());
    if let Err(error) = session.receive(&in_frames(&huge, 1), now) {
        panic!("{error:?}");
    }
    let frames = sent(&mut session);
    assert_eq!(kinds(&frames), [(kind::HEADERS, 1)]);
    let mut status = Vec::new();
    hpack::Decoder::new(0).decode(&frames[0].1, usize::MAX, |_, value| status.push(value.to_vec())).unwrap();
    assert_eq!(status, [b"431".to_vec()]);
    assert!(session.take_opened().is_empty());
    let mut again = get("/next");
    again.push(0xbe);
    session.receive(&headers(3, &again, true), now).unwrap();
    assert_eq!(session.take_opened(), [3]);
    assert!(read_all(&mut session, 3).contains("x-small: kept"), "the table kept the field");
    // A block past what is read at all (a list limit and a quarter).
    let (mut session, now) = started();
    let mut raw = get("/");
    raw.extend(block(&[("x-raw", &"\u{1}".repeat(41 * 1024))]));
    assert_eq!(session.receive(&in_frames(&raw, 1), now).unwrap_err().code(), ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn pings_are_answered_within_an_allowance_and_a_client_that_never_reads_is_cut() {
    let (mut session, now) = started();
    let pings: Vec<u8> = (0..64).flat_map(|_| frame(kind::PING, 0, 0, b"12345678")).collect();
    session.receive(&pings, now).unwrap();
    assert_eq!(sent(&mut session).iter().filter(|(header, _)| header.kind == kind::PING).count(), 64);
    assert!(session.receive(&frame(kind::PING, 0, 0, b"12345678"), now).is_err(), "the 65th at once");
    let (mut session, mut now) = started();
    let settings_frames = frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 1]);
    let outcome = (0..100_000).try_for_each(|_| {
        now += Duration::from_millis(200);
        session.receive(&settings_frames, now)
    });
    assert_eq!(outcome.unwrap_err().code(), ErrorCode::ENHANCE_YOUR_CALM, "its acks piled up unread");
}

#[test]
fn going_away_lets_streams_in_flight_finish_and_takes_no_new_ones() {
    let (mut session, now) = started();
    session.receive(&headers(1, &get("/"), true), now).unwrap();
    assert_eq!(session.take_opened(), [1]);
    session.go_away();
    session.receive(&headers(3, &get("/"), true), now).unwrap();
    assert!(session.take_opened().is_empty());
    let frames = sent(&mut session);
    let goaway = frames.iter().find(|(header, _)| header.kind == kind::GOAWAY).unwrap();
    assert_eq!(u32::from_be_bytes(goaway.1[..4].try_into().unwrap()), 1, "the last stream served");
    assert!(!session.is_finished());
    session.write_response(1, b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    session.end_response(1);
    sent(&mut session);
    session.release(1);
    assert!(session.is_finished());
}

#[test]
fn a_connection_gone_mid_response_resets_its_stream() {
    let (mut session, now) = started();
    session.receive(&headers(1, &get("/"), true), now).unwrap();
    session.write_response(1, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").unwrap();
    sent(&mut session);
    session.release(1);
    assert_eq!(rst_code(&sent(&mut session), 1), Some(ErrorCode::INTERNAL_ERROR));
    assert_eq!(session.stream_count(), 0);
}

#[test]
fn random_frames_never_panic_and_hold_little() {
    let mut noise = crate::test_support::Noise::new(0x51f1_5eed);
    for _ in 0..300 {
        let (mut session, now) = started();
        for _ in 0..50 {
            let kind = noise.below(11) as u8;
            let stream = noise.below(8) as u32;
            let length = noise.below(40);
            let payload = noise.bytes(length);
            let flags = noise.next() as u8;
            let _ = session.receive(&frame(kind, flags, stream, &payload), now);
            for stream in session.take_opened() {
                let _ = session.write_response(stream, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                session.end_response(stream);
            }
            let _ = sent(&mut session);
        }
        assert!(session.held_bytes() < 1024 * 1024);
    }
}
