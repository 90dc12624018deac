//! Reads a request body, by Content-Length or chunked, into its spool, so
//! a worker only ever sees a complete request.

use crate::config::{FrontConfig, MAX_TIMEOUT};
use crate::connection_id::ConnectionId;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::error_response::{CONTINUE, Rejection};
use crate::request::body_spool::{BodySpool, SpoolError, SpooledBody};
use crate::request::head::{BodyFraming, RequestHead};
use crate::spool_writer::SpoolWriter;
use crate::temp_budget::TempBudget;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Progress {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
}

/// What to do with a request once its head is in.
pub enum BodyPlan {
    /// No body: the request is complete.
    None(RequestHead),
    Read(Box<BodyRead>),
    /// The announced body is over client_max_body_size: refused unread.
    Refuse(Rejection),
    /// The announced body needs a temp file the temp budget cannot cover
    /// now: refused unread, before a `100 Continue` invites it.
    NoTempRoom,
}

pub enum BodyFeed {
    NeedMore,
    Complete,
    Rejected(Rejection),
    /// The body could not be stored: temp_path is full, or the temp budget spent.
    SpoolFailed(SpoolError),
}

#[derive(Debug)]
pub struct BodyRead {
    head: RequestHead,
    progress: Progress,
    spool: BodySpool,
    started: Instant,
    /// `100 Continue` bytes still to send before the client sends its body.
    interim: &'static [u8],
}

impl BodyRead {
    /// `body_started` says bytes after the head already arrived, in which
    /// case the client did not wait for `100 Continue`. `writer` writes the
    /// body's temp file, if it needs one, off the loop.
    pub fn plan(
        head: RequestHead,
        config: &FrontConfig,
        budget: &Arc<TempBudget>,
        body_started: bool,
        now: Instant,
        writer: Option<(SpoolWriter, ConnectionId)>,
    ) -> BodyPlan {
        let max_body = (config.client_max_body_size > 0).then_some(config.client_max_body_size);
        let progress = match head.framing {
            BodyFraming::None | BodyFraming::Length(0) => return BodyPlan::None(head),
            BodyFraming::Length(length) if max_body.is_some_and(|max| length > max) => {
                return BodyPlan::Refuse(too_large());
            }
            BodyFraming::Length(length) => Progress::Length { remaining: length },
            BodyFraming::Chunked => Progress::Chunked(ChunkedDecoder::new(max_body)),
        };
        let expected = match progress {
            Progress::Length { remaining } => Some(remaining),
            Progress::Chunked(_) => None,
        };
        if let Some(length) = expected
            && length > config.client_body_buffer_size as u64
            && !budget.could_hold(length)
        {
            return BodyPlan::NoTempRoom;
        }
        let interim: &'static [u8] = if head.expects_continue && !body_started { CONTINUE } else { b"" };
        let spool = BodySpool::new(config.client_body_buffer_size, &config.temp_path, expected, budget, writer);
        BodyPlan::Read(Box::new(BodyRead { head, progress, spool, started: now, interim }))
    }

    pub fn interim(&self) -> &'static [u8] {
        self.interim
    }

    pub fn interim_sent(&mut self, count: usize) {
        self.interim = &self.interim[count..];
    }

    /// Bytes the body still needs, when its length says so: reads take no
    /// more, so junk after a short body stays in the kernel, not in memory.
    pub fn still_needed(&self) -> Option<u64> {
        match self.progress {
            Progress::Length { remaining } => Some(remaining),
            Progress::Chunked(_) => None,
        }
    }

    /// How many bytes may be read from the client now (see `BodySpool::room`).
    pub fn room(&self) -> usize {
        self.spool.room()
    }

    /// Every byte read so far is stored: the body may go to a worker.
    pub fn is_stored(&self) -> bool {
        self.spool.is_stored()
    }

    /// The temp file could not be written.
    pub fn spool_failure(&self) -> Option<SpoolError> {
        self.spool.failure()
    }

    /// When the body falls below `min_rate` bytes a second on average, if
    /// nothing more comes: `grace` after it began, plus the time its bytes
    /// so far buy. `None` without a minimum.
    pub fn rate_deadline(&self, min_rate: u64, grace: Duration) -> Option<Instant> {
        if min_rate == 0 {
            return None;
        }
        let bought = Duration::try_from_secs_f64(self.received() as f64 / min_rate as f64).unwrap_or(MAX_TIMEOUT);
        Some(self.started + grace + bought.min(MAX_TIMEOUT))
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.spool.len()
    }

    /// Feeds bytes from the client; returns how it went and how many bytes
    /// of `input` belonged to the body (the rest is the next request's).
    /// What the input decoded to leaves for the temp file as one write.
    pub fn feed(&mut self, input: &[u8]) -> (BodyFeed, usize) {
        let (feed, used) = self.decode(input);
        match (feed, self.spool.flush()) {
            (BodyFeed::NeedMore | BodyFeed::Complete, Err(error)) => (BodyFeed::SpoolFailed(error.into()), used),
            (feed, _) => (feed, used),
        }
    }

    fn decode(&mut self, input: &[u8]) -> (BodyFeed, usize) {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.progress {
                Progress::Length { remaining } => {
                    let take = (*remaining).min(rest.len() as u64) as usize;
                    if let Err(error) = self.spool.write(&rest[..take]) {
                        return (BodyFeed::SpoolFailed(error), used);
                    }
                    *remaining -= take as u64;
                    used += take;
                    let feed = if *remaining == 0 { BodyFeed::Complete } else { BodyFeed::NeedMore };
                    return (feed, used);
                }
                Progress::Chunked(decoder) => {
                    if decoder.is_done() {
                        return (BodyFeed::Complete, used);
                    }
                    if rest.is_empty() {
                        return (BodyFeed::NeedMore, used);
                    }
                    match decoder.decode(rest) {
                        Ok(step) => {
                            if let Err(error) = self.spool.write(&rest[step.data]) {
                                return (BodyFeed::SpoolFailed(error), used);
                            }
                            used += step.consumed;
                        }
                        Err(ChunkError::Malformed(reason)) => {
                            return (BodyFeed::Rejected(Rejection::new(400, reason)), used);
                        }
                        Err(ChunkError::TooLarge) => return (BodyFeed::Rejected(too_large()), used),
                    }
                }
            }
        }
    }

    /// The head, the body, and what is left of a `100 Continue` the client
    /// got only part of: it must be finished before the response. (One the
    /// client got none of is dropped; it sent its body without waiting.)
    pub fn finish(self) -> (RequestHead, SpooledBody, &'static [u8]) {
        let unfinished = if self.interim.len() < CONTINUE.len() { self.interim } else { b"" };
        (self.head, self.spool.finish(), unfinished)
    }
}

fn too_large() -> Rejection {
    Rejection::new(413, "request body larger than client_max_body_size")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::body_spool::SpooledBody;
    use crate::request::head::HeadReader;

    fn head(raw: &[u8]) -> RequestHead {
        let mut reader = HeadReader::default();
        reader.push(raw);
        reader.poll(&FrontConfig::default().head_limits).unwrap().unwrap().0
    }

    fn config() -> FrontConfig {
        FrontConfig { client_max_body_size: 10, client_body_buffer_size: 4, ..FrontConfig::default() }
    }

    fn read(plan: BodyPlan) -> Box<BodyRead> {
        match plan {
            BodyPlan::Read(body) => body,
            _ => panic!("expected a body to read"),
        }
    }

    #[test]
    fn a_body_slower_than_the_minimum_rate_runs_out_of_time() {
        let started = Instant::now();
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
        let roomy = FrontConfig { client_body_buffer_size: 4096, ..FrontConfig::default() };
        let mut body = read(BodyRead::plan(head(raw), &roomy, &TempBudget::new(0), true, started, None));
        let grace = Duration::from_secs(60);
        assert_eq!(body.rate_deadline(1024, grace), Some(started + grace));
        assert_eq!(body.feed(&[b'x'; 2048]).1, 2048);
        assert_eq!(body.rate_deadline(1024, grace), Some(started + grace + Duration::from_secs(2)), "2 KiB buy 2 s");
        assert_eq!(body.rate_deadline(0, grace), None, "no minimum");
    }

    /// 1-byte chunks, six bytes each on the wire, read 64 KiB at a time
    /// with a disk that writes only when the test says: each read leaves as
    /// one write, and what waits for the disk stays within the spool's
    /// limit, overhead included.
    #[test]
    fn a_body_of_one_byte_chunks_makes_one_write_per_read_and_holds_no_more_than_its_limit() {
        use crate::spool_writer::{JOB_OVERHEAD, MAX_UNCONFIRMED, SpoolWriter};
        let (writer, queue) = SpoolWriter::unstarted();
        let owner = ConnectionId { loop_index: 0, slot: 1, serial: 1 };
        let dir = tempfile::tempdir().unwrap();
        let config = FrontConfig {
            client_body_buffer_size: 16 * 1024,
            temp_path: Arc::from(dir.path()),
            ..FrontConfig::default()
        };
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let plan = BodyRead::plan(
            head(raw),
            &config,
            &TempBudget::new(0),
            true,
            Instant::now(),
            Some((writer.clone(), owner)),
        );
        let mut body = read(plan);
        let decoded: u64 = 2 * 1024 * 1024;
        let wire: Vec<u8> = b"1\r\na\r\n".repeat(decoded as usize).into_iter().chain(*b"0\r\n\r\n").collect();
        let (mut sent, mut reads, mut writes) = (0, 0, 0);
        loop {
            let room = body.room();
            if room == 0 {
                assert!(writer.unconfirmed() <= MAX_UNCONFIRMED + JOB_OVERHEAD, "{} held", writer.unconfirmed());
                assert!(writer.jobs() <= 64, "{} jobs for one body", writer.jobs());
                writes += writer.run_queued(&queue);
                continue;
            }
            let piece = &wire[sent..(sent + room.min(64 * 1024)).min(wire.len())];
            reads += 1;
            let (feed, used) = body.feed(piece);
            sent += used;
            match feed {
                BodyFeed::NeedMore => {}
                BodyFeed::Complete => break,
                _ => panic!("a legal body"),
            }
        }
        writes += writer.run_queued(&queue);
        assert!(body.is_stored());
        assert!(writes <= reads, "{writes} writes for {reads} reads");
        let (_, spooled, _) = body.finish();
        let SpooledBody::File { file, length, .. } = spooled else { panic!("a file") };
        assert_eq!(length, decoded);
        let mut stored = Vec::new();
        std::io::Read::read_to_end(&mut &*file, &mut stored).unwrap();
        assert!(stored.len() as u64 == decoded && stored.iter().all(|&byte| byte == b'a'));
    }

    /// Chunked bodies of 1-byte chunks, or of random sizes, past memory
    /// into a file, read in random pieces (a read up to 64 KiB) beside a
    /// disk that writes only now and then: the file holds exactly the
    /// body, the next request's bytes are left over, there is never more
    /// than one write per read, and what waits for the disk stays within
    /// the spool's limit, overhead included.
    #[test]
    fn fuzzed_chunked_bodies_of_tiny_and_random_chunks_reach_the_file_whole_and_bounded() {
        use crate::spool_writer::{JOB_OVERHEAD, MAX_UNCONFIRMED, SpoolWriter};
        let dir = tempfile::tempdir().unwrap();
        let config = FrontConfig {
            client_body_buffer_size: 16 * 1024,
            temp_path: Arc::from(dir.path()),
            ..FrontConfig::default()
        };
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let make = |noise: &mut crate::test_support::Noise| {
            let body: Vec<u8> = (0..20_000 + noise.below(120_000)).map(|_| noise.next() as u8).collect();
            let tiny = noise.below(2) == 0;
            let mut wire = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let take = if tiny { 1 } else { 1 + noise.below(rest.len().min(20_000)) };
                wire.extend(format!("{take:x}\r\n").bytes());
                wire.extend_from_slice(&rest[..take]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[take..];
            }
            wire.extend_from_slice(b"0\r\n\r\nNEXT");
            (wire, body)
        };
        crate::test_support::fuzz_heavy(17, 40, 1000, make, |wire, body, noise| {
            let (writer, queue) = SpoolWriter::unstarted();
            let owner = ConnectionId { loop_index: 0, slot: 1, serial: 1 };
            let budget = TempBudget::new(0);
            let plan = BodyRead::plan(head(raw), &config, &budget, true, Instant::now(), Some((writer.clone(), owner)));
            let mut body_read = read(plan);
            let (mut used_total, mut reads, mut writes) = (0, 0, 0);
            loop {
                let room = body_read.room();
                if room == 0 || noise.below(4) == 0 {
                    assert!(writer.unconfirmed() <= MAX_UNCONFIRMED + JOB_OVERHEAD, "{} held", writer.unconfirmed());
                    writes += writer.run_queued(&queue);
                    continue;
                }
                let size = 1 + noise.below(room.min(64 * 1024));
                let piece = &wire[used_total..(used_total + size).min(wire.len())];
                reads += 1;
                let (feed, used) = body_read.feed(piece);
                used_total += used;
                match feed {
                    BodyFeed::NeedMore => {}
                    BodyFeed::Complete => break,
                    _ => panic!("a legal body"),
                }
            }
            writes += writer.run_queued(&queue);
            assert!(writes <= reads, "{writes} writes for {reads} reads");
            assert_eq!(&wire[used_total..], b"NEXT", "the next request is left over");
            assert!(body_read.is_stored());
            let (_, spooled, _) = body_read.finish();
            let SpooledBody::File { file, length, .. } = spooled else { panic!("a file") };
            assert_eq!(length, body.len() as u64);
            let mut stored = Vec::new();
            std::io::Read::read_to_end(&mut &*file, &mut stored).unwrap();
            assert!(stored == *body, "the file holds the body");
        });
    }

    #[test]
    fn length_body_stops_at_its_end_and_leaves_the_rest() {
        let mut body = read(BodyRead::plan(
            head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"),
            &config(),
            &TempBudget::new(0),
            true,
            Instant::now(),
            None,
        ));
        assert!(matches!(body.feed(b"hel"), (BodyFeed::NeedMore, 3)));
        assert!(matches!(body.feed(b"loGET /"), (BodyFeed::Complete, 2)));
        let (_, spooled, interim) = body.finish();
        assert_eq!(spooled.len(), 5);
        assert!(interim.is_empty());
    }

    #[test]
    fn chunked_body_completes_and_oversize_is_refused() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut body = read(BodyRead::plan(head(raw), &config(), &TempBudget::new(0), true, Instant::now(), None));
        assert!(matches!(body.feed(b"3\r\nabc\r\n0\r\n\r\nNEXT"), (BodyFeed::Complete, 13)));

        let mut body = read(BodyRead::plan(head(raw), &config(), &TempBudget::new(0), true, Instant::now(), None));
        assert!(matches!(body.feed(b"b\r\n"), (BodyFeed::Rejected(Rejection { status: 413, .. }), _)));
    }

    #[test]
    fn announced_oversize_is_refused_unread_and_no_body_means_complete() {
        let big = head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n");
        assert!(matches!(
            BodyRead::plan(big, &config(), &TempBudget::new(0), false, Instant::now(), None),
            BodyPlan::Refuse(Rejection { status: 413, .. })
        ));
        let none = head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(
            BodyRead::plan(none, &config(), &TempBudget::new(0), false, Instant::now(), None),
            BodyPlan::None(_)
        ));
    }

    #[test]
    fn continue_is_owed_only_to_a_client_that_waits_for_it() {
        let raw = b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            read(BodyRead::plan(head(raw), &config(), &TempBudget::new(0), false, Instant::now(), None)).interim(),
            CONTINUE
        );
        assert_eq!(
            read(BodyRead::plan(head(raw), &config(), &TempBudget::new(0), true, Instant::now(), None)).interim(),
            b""
        );
    }

    #[test]
    fn half_sent_continue_is_finished_and_unsent_one_dropped() {
        let raw = b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let mut body = read(BodyRead::plan(head(raw), &config(), &TempBudget::new(0), false, Instant::now(), None));
        body.interim_sent(5);
        body.feed(b"abc");
        assert_eq!(body.finish().2, &CONTINUE[5..]);
        let mut body = read(BodyRead::plan(head(raw), &config(), &TempBudget::new(0), false, Instant::now(), None));
        body.feed(b"abc");
        assert_eq!(body.finish().2, b"");
    }
}
