//! The static table and a connection's dynamic table (RFC 7541 §2.3, §4).

use std::collections::VecDeque;

use super::DecodeError;

/// What the RFC adds to each entry's name and value in a table's size: an
/// estimate of an entry's bookkeeping, so it is also what the front counts
/// it holds per entry.
pub const ENTRY_OVERHEAD: usize = 32;

/// Appendix A, in order: index 1 is the first.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The index of the first static entry named `name`, in any case.
pub fn static_index_of_name(name: &[u8]) -> Option<usize> {
    STATIC.iter().position(|(entry, _)| entry.eq_ignore_ascii_case(name)).map(|at| at + 1)
}

/// The index of the static entry with this name and value, if any.
pub fn static_index_of_field(name: &[u8], value: &[u8]) -> Option<usize> {
    STATIC.iter().position(|&(entry_name, entry_value)| entry_name == name && entry_value == value).map(|at| at + 1)
}

/// One entry's name and value in one allocation.
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn field(&self) -> (&[u8], &[u8]) {
        self.bytes.split_at(self.name_len)
    }

    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// The entries a peer's encoder added, newest first, within a size the
/// encoder chose and the front allowed.
pub struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    capacity: usize,
}

impl DynamicTable {
    pub fn new(capacity: usize) -> Self {
        DynamicTable { entries: VecDeque::new(), size: 0, capacity }
    }

    /// Its size as the RFC counts it: names, values and the overhead per entry.
    pub fn size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A field by its index in the joint address space (§2.3.3): the
    /// static table's 61, then this table's entries, newest first.
    pub fn get(&self, index: u64) -> Result<(&[u8], &[u8]), DecodeError> {
        let index = usize::try_from(index).map_err(|_| DecodeError::IndexPastTable)?;
        match index {
            0 => Err(DecodeError::IndexZero),
            1..=61 => Ok(STATIC[index - 1]),
            _ => self.entries.get(index - 62).map(Entry::field).ok_or(DecodeError::IndexPastTable),
        }
    }

    /// Adds a field, evicting the oldest to make room; a field larger than
    /// the whole table empties it and is not kept (§4.4).
    pub fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.capacity {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_down_to(self.capacity - size);
        let bytes: Box<[u8]> = [name, value].concat().into_boxed_slice();
        self.entries.push_front(Entry { bytes, name_len: name.len() });
        self.size += size;
    }

    /// A size update from the encoder (§6.3), already checked against what
    /// the front allows.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_down_to(capacity);
    }

    fn evict_down_to(&mut self, size: usize) {
        while self.size > size {
            let Some(oldest) = self.entries.pop_back() else { break };
            self.size -= oldest.size();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_run_through_the_static_table_then_newest_first() {
        let mut table = DynamicTable::new(4096);
        assert_eq!(table.get(2), Ok((&b":method"[..], &b"GET"[..])));
        assert_eq!(table.get(61), Ok((&b"www-authenticate"[..], &b""[..])));
        assert_eq!(table.get(0), Err(DecodeError::IndexZero));
        assert_eq!(table.get(62), Err(DecodeError::IndexPastTable));
        table.insert(b"a", b"1");
        table.insert(b"b", b"2");
        assert_eq!(table.get(62), Ok((&b"b"[..], &b"2"[..])));
        assert_eq!(table.get(63), Ok((&b"a"[..], &b"1"[..])));
        assert_eq!(table.size(), 2 * 34);
        assert_eq!(table.get(u64::MAX), Err(DecodeError::IndexPastTable));
    }

    #[test]
    fn the_oldest_go_to_make_room_and_an_oversized_field_empties_the_table() {
        let mut table = DynamicTable::new(100);
        table.insert(b"aaaa", b"1111"); // 40
        table.insert(b"bbbb", b"2222"); // 80
        table.insert(b"cccc", b"3333"); // the first goes
        assert_eq!((table.len(), table.size()), (2, 80));
        assert_eq!(table.get(63), Ok((&b"bbbb"[..], &b"2222"[..])));
        table.resize(50);
        assert_eq!((table.len(), table.size()), (1, 40), "a smaller size evicts");
        table.insert(&[b'x'; 60], b"");
        assert_eq!((table.len(), table.size()), (0, 0), "too large for the table: it empties");
    }

    #[test]
    fn static_lookups_ignore_case_for_names_and_need_exact_values() {
        assert_eq!(static_index_of_name(b"Content-Type"), Some(31));
        assert_eq!(static_index_of_name(b":status"), Some(8));
        assert_eq!(static_index_of_name(b"x-custom"), None);
        assert_eq!(static_index_of_field(b":status", b"404"), Some(13));
        assert_eq!(static_index_of_field(b":status", b"302"), None);
    }
}
