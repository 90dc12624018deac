//! HPACK's static Huffman code (RFC 7541 Appendix B). The code is
//! canonical: codes of one length are consecutive in symbol order and
//! follow the last code of the next shorter length. The lengths below
//! therefore give the RFC's whole table (a test checks codes against it),
//! and decoding compares the bits read so far with each length's first
//! code rather than walking a tree.

use super::DecodeError;

/// Bits per symbol, for bytes 0 to 255 and then EOS.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;
const LONGEST: usize = 30;

/// The code laid out for both directions.
struct Code {
    /// Each symbol's code, right-aligned.
    codes: [u32; 257],
    /// Per length: its first code, how many codes it has, and where its
    /// symbols start in `symbols_by_code`.
    first_code: [u32; LONGEST + 1],
    count: [u32; LONGEST + 1],
    first_slot: [usize; LONGEST + 1],
    symbols_by_code: [u16; 257],
}

const CODE: Code = build();

const fn build() -> Code {
    let mut count = [0u32; LONGEST + 1];
    let mut symbol = 0;
    while symbol < 257 {
        count[CODE_LENGTHS[symbol] as usize] += 1;
        symbol += 1;
    }
    let mut first_code = [0u32; LONGEST + 1];
    let mut first_slot = [0usize; LONGEST + 1];
    let (mut code, mut slot, mut length) = (0u32, 0usize, 1);
    while length <= LONGEST {
        code = (code + count[length - 1]) << 1;
        slot += count[length - 1] as usize;
        first_code[length] = code;
        first_slot[length] = slot;
        length += 1;
    }
    let mut codes = [0u32; 257];
    let mut symbols_by_code = [0u16; 257];
    let mut assigned = [0u32; LONGEST + 1];
    let mut symbol = 0;
    while symbol < 257 {
        let length = CODE_LENGTHS[symbol] as usize;
        codes[symbol] = first_code[length] + assigned[length];
        symbols_by_code[first_slot[length] + assigned[length] as usize] = symbol as u16;
        assigned[length] += 1;
        symbol += 1;
    }
    Code { codes, first_code, count, first_slot, symbols_by_code }
}

/// Appends the decoded string. What follows the last symbol must be under
/// a byte of ones, the start of EOS (§5.2); EOS itself is an error.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let (mut code, mut length) = (0u32, 0usize);
    for &byte in input {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            length += 1;
            let offset = code.wrapping_sub(CODE.first_code[length]);
            if offset < CODE.count[length] {
                let symbol = CODE.symbols_by_code[CODE.first_slot[length] + offset as usize];
                if symbol == EOS {
                    return Err(DecodeError::HuffmanEos);
                }
                out.push(symbol as u8);
                (code, length) = (0, 0);
            } else if length == LONGEST {
                // The code is complete, so thirty bits always end a symbol;
                // kept so that no input can index past the tables.
                return Err(DecodeError::HuffmanEos);
            }
        }
    }
    if length > 7 || code != (1 << length) - 1 {
        return Err(DecodeError::HuffmanPadding);
    }
    Ok(())
}

/// How many bytes `input` takes coded, lowercased first if asked.
pub fn encoded_len(input: &[u8], lowercase: bool) -> usize {
    let bits: usize = input.iter().map(|&byte| usize::from(CODE_LENGTHS[usize::from(fold(byte, lowercase))])).sum();
    bits.div_ceil(8)
}

/// Appends `input` coded, lowercased first if asked, padded with ones.
pub fn encode(input: &[u8], lowercase: bool, out: &mut Vec<u8>) {
    let (mut pending, mut pending_bits) = (0u64, 0u32);
    for &byte in input {
        let symbol = usize::from(fold(byte, lowercase));
        pending = (pending << CODE_LENGTHS[symbol]) | u64::from(CODE.codes[symbol]);
        pending_bits += u32::from(CODE_LENGTHS[symbol]);
        while pending_bits >= 8 {
            pending_bits -= 8;
            out.push((pending >> pending_bits) as u8);
        }
        pending &= (1 << pending_bits) - 1;
    }
    if pending_bits > 0 {
        let padding = 8 - pending_bits;
        out.push(((pending << padding) | ((1 << padding) - 1)) as u8);
    }
}

fn fold(byte: u8, lowercase: bool) -> u8 {
    if lowercase { byte.to_ascii_lowercase() } else { byte }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap()).collect()
    }

    #[test]
    fn the_lengths_give_the_rfcs_codes() {
        // A sample of Appendix B, from each end and the middle.
        let expected =
            [(0, 0x1ff8), (b'0', 0x0), (b'a', 0x3), (b'A', 0x21), (b'~', 0x1ffd), (10, 0x3ffffffc), (255, 0x3ffffee)];
        for (symbol, code) in expected {
            assert_eq!(CODE.codes[usize::from(symbol)], code, "symbol {symbol}");
        }
        assert_eq!(CODE.codes[256], 0x3fffffff, "EOS is thirty ones");
        let kraft: f64 = CODE_LENGTHS.iter().map(|&length| 0.5f64.powi(i32::from(length))).sum();
        assert_eq!(kraft, 1.0, "the code is complete");
    }

    #[test]
    fn the_rfcs_strings_decode_and_encode() {
        // From RFC 7541 C.4 and C.6.
        for (wire, text) in [
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            ("d07abe941054d444a8200595040b8166e082a62d1bff", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("9d29ad171863c78f0b97c8e9ae82ae43d3", "https://www.example.com"),
        ] {
            let mut decoded = Vec::new();
            decode(&hex(wire), &mut decoded).unwrap();
            assert_eq!(decoded, text.as_bytes());
            let mut encoded = Vec::new();
            encode(text.as_bytes(), false, &mut encoded);
            assert_eq!(encoded, hex(wire), "{text}");
            assert_eq!(encoded_len(text.as_bytes(), false), encoded.len());
        }
    }

    #[test]
    fn every_byte_round_trips_and_names_can_be_lowercased_on_the_way() {
        let all: Vec<u8> = (0..=255).collect();
        let mut encoded = Vec::new();
        encode(&all, false, &mut encoded);
        let mut decoded = Vec::new();
        decode(&encoded, &mut decoded).unwrap();
        assert_eq!(decoded, all);
        let (mut lowered, mut back) = (Vec::new(), Vec::new());
        encode(b"Content-Type", true, &mut lowered);
        assert_eq!(encoded_len(b"Content-Type", true), lowered.len());
        decode(&lowered, &mut back).unwrap();
        assert_eq!(back, b"content-type");
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // "a" is 00011: three ones pad it; zeros do not.
        assert_eq!(decode(&[0b0001_1111], &mut out), Ok(()));
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(DecodeError::HuffmanPadding));
        // A whole byte of ones after a symbol is padding of eight bits.
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(DecodeError::HuffmanPadding));
        // EOS spelled out.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out), Err(DecodeError::HuffmanEos));
        // Random bytes decode or fail; they never panic.
        let mut noise = crate::test_support::Noise::new(0x2545_f491);
        for _ in 0..2000 {
            let bytes = noise.bytes(16);
            out.clear();
            let _ = decode(&bytes, &mut out);
            assert!(out.len() <= bytes.len() * 8 / 5, "no symbol is under five bits");
        }
    }
}
