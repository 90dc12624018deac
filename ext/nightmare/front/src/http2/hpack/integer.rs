//! HPACK's prefixed integers (RFC 7541 §5.1): a value that fits in the
//! first byte's low bits stays there; a larger one continues 7 bits a byte.

use super::DecodeError;

/// The largest value read. Lengths and indexes past it cannot fit in a
/// header block the front takes, and stopping here keeps the shifts far
/// from overflow whatever a client sends.
const LARGEST: u64 = u32::MAX as u64;

/// Reads an integer whose first byte keeps its low `prefix_bits` for it;
/// gives the value and how many bytes it took.
pub fn decode(input: &[u8], prefix_bits: u32) -> Result<(u64, usize), DecodeError> {
    let all_ones = (1u64 << prefix_bits) - 1;
    let first = *input.first().ok_or(DecodeError::Truncated)?;
    let mut value = u64::from(first) & all_ones;
    if value < all_ones {
        return Ok((value, 1));
    }
    let mut shift = 0;
    for (taken, byte) in input.iter().enumerate().skip(1) {
        // Zero-valued continuation bytes add nothing but length: a run of
        // them is refused like a value that is too large.
        if shift > 28 {
            return Err(DecodeError::IntegerTooLarge);
        }
        value += u64::from(byte & 0x7f) << shift;
        if value > LARGEST {
            return Err(DecodeError::IntegerTooLarge);
        }
        if byte & 0x80 == 0 {
            return Ok((value, taken + 1));
        }
        shift += 7;
    }
    Err(DecodeError::Truncated)
}

/// Appends `value` with the first byte's high bits set to `flags`.
pub fn encode(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: u64) {
    let all_ones = (1u64 << prefix_bits) - 1;
    if value < all_ones {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | all_ones as u8);
    let mut rest = value - all_ones;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfcs_examples_encode_and_decode() {
        // RFC 7541 C.1.1 to C.1.3.
        for (value, prefix, wire) in [(10, 5, &[0x0a][..]), (1337, 5, &[0x1f, 0x9a, 0x0a]), (42, 8, &[0x2a])] {
            let mut out = Vec::new();
            encode(&mut out, 0, prefix, value);
            assert_eq!(out, wire, "{value} on {prefix} bits");
            assert_eq!(decode(wire, prefix), Ok((value, wire.len())));
        }
    }

    #[test]
    fn flags_stay_and_the_prefix_is_read_alone() {
        let mut out = Vec::new();
        encode(&mut out, 0x80, 7, 62);
        assert_eq!(out, [0x80 | 62]);
        assert_eq!(decode(&[0xff, 0x00], 7), Ok((127, 2)), "exactly the prefix's ones, then zero");
    }

    #[test]
    fn what_ends_early_or_runs_too_long_is_refused() {
        assert_eq!(decode(&[], 5), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x1f, 0x9a], 5), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], 5), Err(DecodeError::IntegerTooLarge));
        let zeros = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(decode(&zeros, 5), Err(DecodeError::IntegerTooLarge), "padding bytes past 32 bits");
        let mut out = Vec::new();
        encode(&mut out, 0, 5, LARGEST);
        assert_eq!(decode(&out, 5), Ok((LARGEST, out.len())), "the largest value still reads");
    }
}
