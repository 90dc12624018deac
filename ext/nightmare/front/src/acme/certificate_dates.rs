//! When a certificate starts and stops being valid, read from its DER
//! (RFC 5280 §4.1.2.5): renewal is planned from these, and a stored
//! certificate is reused only while they allow. A small reader of just the
//! path to `validity`, rather than a whole X.509 parser.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::date::days_from_civil;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Two thirds into the lifetime, as Let's Encrypt advises for renewal:
    /// a month of retries left on a 90-day certificate.
    pub fn renewal_time(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }
}

/// `None` when the bytes are not a certificate this reader understands.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    if tbs.first() == Some(&EXPLICIT_VERSION) {
        tbs = element(tbs, EXPLICIT_VERSION)?.1;
    }
    let rest = element(tbs, INTEGER)?.1; // serialNumber
    let rest = element(rest, SEQUENCE)?.1; // signature algorithm
    let rest = element(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = element(rest, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Validity { not_before, not_after })
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The contents of the element at the start of `input`, if it has `tag`,
/// and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count].iter().fold(0usize, |length, byte| length << 8 | usize::from(*byte));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

fn time(input: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (tag, digits_in_year) = match *input.first()? {
        UTC_TIME => (UTC_TIME, 2),
        GENERALIZED_TIME => (GENERALIZED_TIME, 4),
        _ => return None,
    };
    let (text, rest) = element(input, tag)?;
    // YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ: RFC 5280 allows no other form.
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if text.len() != digits_in_year + 10 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().ok();
    let year = number(0..digits_in_year)?;
    // UTCTime's two digits mean 1950 to 2049 (§4.1.2.5.1).
    let year = match digits_in_year {
        2 if year >= 50 => 1900 + year,
        2 => 2000 + year,
        _ => year,
    };
    let at = digits_in_year;
    let (month, day) = (number(at..at + 2)?, number(at + 2..at + 4)?);
    let (hour, minute, second) = (number(at + 4..at + 6)?, number(at + 6..at + 8)?, number(at + 8..at + 10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?);
    Some((at, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn seconds(at: SystemTime) -> u64 {
        at.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050.
        let validity = validity(&made((2026, 12, 8), (2051, 3, 1))).unwrap();
        assert_eq!(seconds(validity.not_before), 1_796_688_000, "2026-12-08T00:00:00Z");
        assert_eq!(seconds(validity.not_after), 2_561_241_600, "2051-03-01T00:00:00Z");
    }

    #[test]
    fn renewal_is_two_thirds_in() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let validity = Validity { not_before: start, not_after: start + Duration::from_secs(90) };
        assert_eq!(validity.renewal_time(), start + Duration::from_secs(60));
    }

    #[test]
    fn junk_and_cut_certificates_are_none() {
        let der = made((2026, 1, 1), (2026, 4, 1));
        assert!(validity(&der).is_some());
        for cut in [0, 1, 10, 60] {
            assert_eq!(validity(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(validity(b"not a certificate"), None);
    }
}
