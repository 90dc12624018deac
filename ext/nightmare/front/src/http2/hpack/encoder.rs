//! Encoding a response's fields. No dynamic table (see the module's note):
//! each field refers to the static table where it can and is otherwise a
//! literal without indexing (RFC 7541 §6.2.2).

use super::table::{static_index_of_field, static_index_of_name};
use super::{huffman, integer};

/// Appends `:status`, indexed for the seven codes the static table has.
pub fn encode_status(out: &mut Vec<u8>, status: u16) {
    let digits = status.to_string();
    match static_index_of_field(b":status", digits.as_bytes()) {
        Some(index) => integer::encode(out, 0x80, 7, index as u64),
        None => {
            integer::encode(out, 0x00, 4, STATUS_NAME_INDEX);
            encode_string(out, digits.as_bytes(), false);
        }
    }
}

const STATUS_NAME_INDEX: u64 = 8;

/// Appends one field; the name is lowercased, as HTTP/2 requires (RFC
/// 9113 §8.2.1), since an HTTP/1.1 server may send any case.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match static_index_of_name(name) {
        Some(index) => integer::encode(out, 0x00, 4, index as u64),
        None => {
            out.push(0x00);
            encode_string(out, name, true);
        }
    }
    encode_string(out, value, false);
}

/// A string literal (§5.2), Huffman-coded when that is shorter.
fn encode_string(out: &mut Vec<u8>, bytes: &[u8], lowercase: bool) {
    let coded_len = huffman::encoded_len(bytes, lowercase);
    if coded_len < bytes.len() {
        integer::encode(out, 0x80, 7, coded_len as u64);
        huffman::encode(bytes, lowercase, out);
    } else {
        integer::encode(out, 0x00, 7, bytes.len() as u64);
        if lowercase {
            out.extend(bytes.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Decoder;
    use super::*;

    fn decode(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut found = Vec::new();
        Decoder::new(4096)
            .decode(block, usize::MAX, |name, value| found.push((name.to_vec(), value.to_vec())))
            .unwrap();
        found
    }

    #[test]
    fn statuses_in_the_static_table_take_one_byte_and_others_a_literal() {
        let mut out = Vec::new();
        encode_status(&mut out, 200);
        assert_eq!(out, [0x88]);
        out.clear();
        encode_status(&mut out, 302);
        assert_eq!(out, [0x08, 0x82, 0x64, 0x02], "RFC 7541 C.6.1's 302, without indexing");
        for status in [100, 101, 204, 304, 404, 418, 503, 599] {
            out.clear();
            encode_status(&mut out, status);
            assert_eq!(decode(&out), [(b":status".to_vec(), status.to_string().into_bytes())]);
        }
    }

    #[test]
    fn fields_round_trip_lowercased_and_take_the_shorter_coding() {
        let fields: [(&[u8], &[u8]); 5] = [
            (b"Content-Type", b"text/html; charset=utf-8"),
            (b"X-Request-Id", b"3f2a9c"),
            (b"Set-Cookie", b"a=b; HttpOnly"),
            (b"x-binary", &[0, 1, 2, 255, 254, b'\t']),
            (b"empty", b""),
        ];
        let mut out = Vec::new();
        for (name, value) in fields {
            encode_field(&mut out, name, value);
        }
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            fields.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.to_vec())).collect();
        assert_eq!(decode(&out), expected);
        out.clear();
        encode_field(&mut out, b"x-binary", &[0, 1, 2]);
        assert_eq!(out[out.len() - 4..], [0x03, 0, 1, 2], "bytes that Huffman makes longer go raw");
        out.clear();
        encode_field(&mut out, b"content-type", b"text/plain");
        assert_eq!(out[..2], [0x0f, 31 - 15], "the static table's name (31, past a 4-bit prefix), without indexing");
    }
}
