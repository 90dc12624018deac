//! Decoding a header block (RFC 7541 §3, §6) into fields handed to the
//! caller one at a time, within a size limit the caller sets.

use std::fmt;

use super::table::{DynamicTable, ENTRY_OVERHEAD};
use super::{huffman, integer};

/// What makes a header block undecodable. Each is a COMPRESSION_ERROR
/// for the whole connection (RFC 9113 §4.3): the table may be out of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    IntegerTooLarge,
    IndexZero,
    IndexPastTable,
    HuffmanEos,
    HuffmanPadding,
    TableSizeAboveSetting,
    TableSizeUpdateAfterField,
}

impl DecodeError {
    pub fn describe(self) -> &'static str {
        match self {
            DecodeError::Truncated => "a header block ends inside a field",
            DecodeError::IntegerTooLarge => "a header block has an integer past 2^32",
            DecodeError::IndexZero => "a header block refers to index 0",
            DecodeError::IndexPastTable => "a header block refers past the end of the table",
            DecodeError::HuffmanEos => "a Huffman-coded string holds EOS",
            DecodeError::HuffmanPadding => "a Huffman-coded string is padded with other than 1 to 7 ones",
            DecodeError::TableSizeAboveSetting => "a table size update exceeds SETTINGS_HEADER_TABLE_SIZE",
            DecodeError::TableSizeUpdateAfterField => "a table size update follows a field",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What a decoded block came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The header list's size as RFC 9113 §6.5.2 counts it (names, values
    /// and 32 bytes a field), whether or not it fit.
    pub list_size: usize,
    /// Every field was handed over; if not, those past the limit were
    /// decoded for the table's sake and dropped.
    pub fits: bool,
}

/// One connection's decoding context.
pub struct Decoder {
    table: DynamicTable,
    /// SETTINGS_HEADER_TABLE_SIZE as the front announced it: the largest
    /// table a client may ask for.
    announced_table_size: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

/// Scratch space kept between blocks; a larger block's is given back.
const SCRATCH_KEPT: usize = 4096;

impl Decoder {
    pub fn new(announced_table_size: usize) -> Self {
        Decoder {
            table: DynamicTable::new(announced_table_size),
            announced_table_size,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// What the client made this decoder hold: its table as the RFC counts
    /// it, and scratch space.
    pub fn held_bytes(&self) -> usize {
        self.table.size() + self.name.capacity() + self.value.capacity()
    }

    /// Decodes a whole block (HEADERS with its CONTINUATIONs), handing
    /// each field to `field` while the list stays within `list_limit`.
    /// Fields past it are still decoded and indexed, so the table stays in
    /// step with the client's and the connection can go on.
    pub fn decode(
        &mut self,
        block: &[u8],
        list_limit: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<Decoded, DecodeError> {
        let mut outcome = Decoded { list_size: 0, fits: true };
        let count = |outcome: &mut Decoded, name: &[u8], value: &[u8]| {
            outcome.list_size += name.len() + value.len() + ENTRY_OVERHEAD;
            outcome.fits &= outcome.list_size <= list_limit;
            outcome.fits
        };
        let (mut at, mut fields_seen) = (0, false);
        let result = loop {
            let Some(&first) = block.get(at) else { break Ok(outcome) };
            let rest = &block[at..];
            let step = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                integer::decode(rest, 7).and_then(|(index, taken)| {
                    let (name, value) = self.table.get(index)?;
                    if count(&mut outcome, name, value) {
                        field(name, value);
                    }
                    Ok(taken)
                })
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before any field.
                if fields_seen {
                    break Err(DecodeError::TableSizeUpdateAfterField);
                }
                integer::decode(rest, 5).and_then(|(size, taken)| {
                    let size = usize::try_from(size).ok().filter(|size| *size <= self.announced_table_size);
                    self.table.resize(size.ok_or(DecodeError::TableSizeAboveSetting)?);
                    Ok(taken)
                })
            } else {
                // A literal (§6.2): with incremental indexing (01), or
                // without or never indexed (0000, 0001).
                let indexing = first & 0xc0 == 0x40;
                self.read_literal(rest, if indexing { 6 } else { 4 }).inspect(|_| {
                    if count(&mut outcome, &self.name, &self.value) {
                        field(&self.name, &self.value);
                    }
                    if indexing {
                        self.table.insert(&self.name, &self.value);
                    }
                })
            };
            match step {
                Ok(taken) => at += taken,
                Err(error) => break Err(error),
            }
            fields_seen |= first & 0xe0 != 0x20;
        };
        self.name.clear();
        self.value.clear();
        self.name.shrink_to(SCRATCH_KEPT);
        self.value.shrink_to(SCRATCH_KEPT);
        result
    }

    /// Reads a literal's name (indexed or a string) and value into scratch.
    fn read_literal(&mut self, input: &[u8], prefix_bits: u32) -> Result<usize, DecodeError> {
        let (name_index, mut taken) = integer::decode(input, prefix_bits)?;
        self.name.clear();
        if name_index == 0 {
            taken += read_string(&input[taken..], &mut self.name)?;
        } else {
            self.name.extend_from_slice(self.table.get(name_index)?.0);
        }
        taken += read_string(&input[taken..], &mut self.value)?;
        Ok(taken)
    }
}

/// Reads a string literal (§5.2) into `out`; gives the bytes it took.
fn read_string(input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
    out.clear();
    let huffman_coded = input.first().is_some_and(|first| first & 0x80 != 0);
    let (length, taken) = integer::decode(input, 7)?;
    let end =
        usize::try_from(length).ok().and_then(|length| taken.checked_add(length)).filter(|end| *end <= input.len());
    let bytes = &input[taken..end.ok_or(DecodeError::Truncated)?];
    if huffman_coded {
        huffman::decode(bytes, out)?;
    } else {
        out.extend_from_slice(bytes);
    }
    Ok(taken + bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap()).collect()
    }

    fn fields(decoder: &mut Decoder, wire: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let outcome = decoder
            .decode(&hex(wire), usize::MAX, |name, value| {
                found.push((String::from_utf8(name.to_vec()).unwrap(), String::from_utf8(value.to_vec()).unwrap()))
            })
            .unwrap();
        assert!(outcome.fits);
        found
    }

    fn list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn the_rfcs_single_field_examples() {
        // C.2.1 to C.2.4.
        let mut decoder = Decoder::new(4096);
        let with_indexing = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572";
        assert_eq!(fields(&mut decoder, with_indexing), list(&[("custom-key", "custom-header")]));
        assert_eq!(decoder.table.size(), 55);
        let mut decoder = Decoder::new(4096);
        assert_eq!(fields(&mut decoder, "040c 2f73 616d 706c 652f 7061 7468"), list(&[(":path", "/sample/path")]));
        assert_eq!(fields(&mut decoder, "1008 7061 7373 776f 7264 0673 6563 7265 74"), list(&[("password", "secret")]));
        assert_eq!(fields(&mut decoder, "82"), list(&[(":method", "GET")]));
        assert_eq!(decoder.table.size(), 0, "none of these index");
    }

    #[test]
    fn the_rfcs_requests_share_a_table() {
        // C.4: Huffman-coded; C.3 is the same without, so both are read.
        for wires in [
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
        ] {
            let mut decoder = Decoder::new(4096);
            let base = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
            assert_eq!(fields(&mut decoder, wires[0]), list(&base));
            assert_eq!(decoder.table.size(), 57);
            assert_eq!(fields(&mut decoder, wires[1]), list(&[&base[..], &[("cache-control", "no-cache")]].concat()));
            assert_eq!(decoder.table.size(), 110);
            let third = [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ];
            assert_eq!(fields(&mut decoder, wires[2]), list(&third));
            assert_eq!((decoder.table.size(), decoder.table.len()), (164, 3));
        }
    }

    #[test]
    fn the_rfcs_responses_evict_from_a_small_table() {
        // C.6, with a 256-byte table.
        let mut decoder = Decoder::new(256);
        let first = "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3";
        let date = "Mon, 21 Oct 2013 20:13:21 GMT";
        let expected =
            [(":status", "302"), ("cache-control", "private"), ("date", date), ("location", "https://www.example.com")];
        assert_eq!(fields(&mut decoder, first), list(&expected));
        assert_eq!(decoder.table.size(), 222);
        let expected =
            [(":status", "307"), ("cache-control", "private"), ("date", date), ("location", "https://www.example.com")];
        assert_eq!(fields(&mut decoder, "4883 640e ffc1 c0bf"), list(&expected));
        assert_eq!(decoder.table.size(), 222);
        let third = "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        let expected = [
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            ("set-cookie", cookie),
        ];
        assert_eq!(fields(&mut decoder, third), list(&expected));
        assert_eq!((decoder.table.size(), decoder.table.len()), (215, 3));
    }

    #[test]
    fn past_the_limit_fields_are_dropped_but_still_indexed() {
        let mut decoder = Decoder::new(4096);
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572 82");
        let mut handed = 0;
        let outcome = decoder.decode(&block, 40, |_, _| handed += 1).unwrap();
        assert_eq!(outcome, Decoded { list_size: 55 + 42, fits: false });
        assert_eq!(handed, 0, "the first field alone is past 40 bytes, and the rest after it");
        assert_eq!(fields(&mut decoder, "be"), list(&[("custom-key", "custom-header")]), "the table kept it");
    }

    #[test]
    fn size_updates_come_first_and_within_the_setting() {
        let mut decoder = Decoder::new(4096);
        fields(&mut decoder, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(fields(&mut decoder, "20 3f e1 1f 82"), list(&[(":method", "GET")]), "to 0 then 4096: emptied");
        assert_eq!(decoder.table.len(), 0);
        let mut none = |_: &[u8], _: &[u8]| {};
        assert_eq!(decoder.decode(&hex("3fe21f"), usize::MAX, &mut none), Err(DecodeError::TableSizeAboveSetting));
        assert_eq!(decoder.decode(&hex("82 20"), usize::MAX, &mut none), Err(DecodeError::TableSizeUpdateAfterField));
    }

    #[test]
    fn broken_blocks_are_errors_never_panics() {
        let mut decoder = Decoder::new(4096);
        let mut none = |_: &[u8], _: &[u8]| {};
        for (wire, error) in [
            ("80", DecodeError::IndexZero),
            ("be", DecodeError::IndexPastTable),
            ("400a 6375", DecodeError::Truncated),
            ("04", DecodeError::Truncated),
            ("0081 ff", DecodeError::HuffmanPadding),
            ("0084 ffff ffff 00", DecodeError::HuffmanEos),
            ("7fff ffff ffff 0f", DecodeError::IntegerTooLarge),
        ] {
            assert_eq!(decoder.decode(&hex(wire), usize::MAX, &mut none), Err(error), "{wire}");
        }
        let mut noise = crate::test_support::Noise::new(0x9e37_79b9);
        for _ in 0..5000 {
            let _ = decoder.decode(&noise.bytes(24), 1024, &mut none);
            assert!(decoder.table.size() <= 4096);
        }
        assert!(decoder.held_bytes() <= 4096 + 2 * SCRATCH_KEPT);
    }

    /// hpack-test-case's stories: header blocks from eight encoders, each
    /// story on one connection, decoded in order; and each list encoded
    /// again by the front's encoder and read back.
    #[test]
    fn the_corpus_decodes_and_what_the_encoder_makes_of_it_reads_back() {
        struct Block<'a> {
            story: &'a str,
            size: usize,
            wire: &'a str,
            fields: Vec<(String, String)>,
        }
        let mut blocks: Vec<Block> = Vec::new();
        let (mut story, mut size) = ("", 0);
        for line in include_str!("corpus/stories.txt").lines().filter(|line| !line.starts_with('#')) {
            if let Some(name) = line.strip_prefix("story ") {
                story = name;
            } else if let Some(number) = line.strip_prefix("size ") {
                size = number.parse().unwrap();
            } else if let Some(wire) = line.strip_prefix("wire ") {
                blocks.push(Block { story, size, wire, fields: Vec::new() });
            } else {
                let (name, value) = line.split_once('\t').unwrap();
                blocks.last_mut().unwrap().fields.push((name.to_string(), value.to_string()));
            }
        }
        assert_eq!(blocks.len(), 712, "every block of the 34 stories");
        let mut decoder = Decoder::new(0);
        for (at, block) in blocks.iter().enumerate() {
            if at == 0 || blocks[at - 1].story != block.story {
                assert!(decoder.table.size() <= blocks[at.saturating_sub(1)].size);
                decoder = Decoder::new(block.size);
            }
            assert_eq!(fields(&mut decoder, block.wire), block.fields, "{}: {}", block.story, block.wire);
            let mut encoded = Vec::new();
            block
                .fields
                .iter()
                .for_each(|(name, value)| super::super::encode_field(&mut encoded, name.as_bytes(), value.as_bytes()));
            let mut again = Vec::new();
            Decoder::new(0)
                .decode(&encoded, usize::MAX, |name, value| again.push((name.to_vec(), value.to_vec())))
                .unwrap();
            let expected: Vec<(Vec<u8>, Vec<u8>)> = block
                .fields
                .iter()
                .map(|(name, value)| (name.clone().into_bytes(), value.clone().into_bytes()))
                .collect();
            assert_eq!(again, expected);
        }
    }
}
