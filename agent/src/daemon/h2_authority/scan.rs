//! A walk over an HPACK header block's field representations (RFC 7541 section 6)
//! that decodes nothing: it finds what the limits and the rewrite cache need to know
//! before anything costly runs.
//!
//! The walk splits a block exactly as loona-hpack 0.4.3's `Decoder` does: the same
//! first-byte classification (`FieldRepresentation::new`), the same integers (at most
//! 5 bytes) and the same string lengths. So whenever loona decodes a block, this walk
//! has seen the same representations, and [`BlockScan::changes_table`] is true whenever
//! loona's decoder may change its dynamic table.

/// What one walk over a header block found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockScan {
    /// How many strings are Huffman-coded.
    pub huffman_strings: usize,
    /// Whether decoding the block changes the dynamic table: it holds a literal with
    /// incremental indexing (`01xxxxxx`, an insertion) or a dynamic table size update
    /// (`001xxxxx`).
    pub changes_table: bool,
}

impl BlockScan {
    /// Walks `block`; `None` if a representation is cut short.
    pub fn of(mut block: &[u8]) -> Option<BlockScan> {
        let mut scan = BlockScan {
            huffman_strings: 0,
            changes_table: false,
        };
        while let Some(&first) = block.first() {
            // The index prefix of each representation, whether a literal value follows,
            // and whether it changes the dynamic table.
            let (prefix, literal, changes) = match first {
                0x80.. => (7, false, false),     // indexed field
                0x40..=0x7f => (6, true, true),  // literal with incremental indexing
                0x20..=0x3f => (5, false, true), // dynamic table size update
                _ => (4, true, false),           // literal without indexing, never indexed
            };
            scan.changes_table |= changes;
            let (index, rest) = hpack_integer(block, prefix)?;
            block = rest;
            let strings = match (literal, index) {
                (false, _) => 0,
                (true, 0) => 2, // a literal name, then the value
                (true, _) => 1,
            };
            for _ in 0..strings {
                scan.huffman_strings += usize::from(block.first()? & 0x80 != 0);
                let (len, rest) = hpack_integer(block, 7)?;
                block = rest.get(len..)?;
            }
        }
        Some(scan)
    }
}

/// An HPACK integer with a `prefix`-bit prefix at the start of `bytes` (RFC 7541
/// section 5.1), at most 5 bytes long as in loona-hpack, and the bytes after it.
fn hpack_integer(bytes: &[u8], prefix: u32) -> Option<(usize, &[u8])> {
    let max = (1 << prefix) - 1;
    let mut value = usize::from(*bytes.first()?) & max;
    if value < max {
        return Some((value, &bytes[1..]));
    }
    for (i, &b) in bytes.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}
