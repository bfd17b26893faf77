//! The last header block a connection rewrote, reused when the client sends the same
//! bytes again and neither HPACK table has changed since.
//!
//! Why: loona-hpack builds a fresh Huffman table for every Huffman-coded string it
//! decodes (loona issue 229), and a typical client sends one in every request (h2 and
//! nghttp2 never index `:path`, so each request carries it as a Huffman-coded literal).
//! A client repeating a call sends the same block each time, so a one-entry cache
//! spares nearly all of that work.
//!
//! Why a stored rewrite is what loona would produce again:
//! - Decoding (loona-hpack 0.4.3 `Decoder`): its only state is the dynamic table (its
//!   entries and size) and the fixed allowed maximum. Only two representations write
//!   to the table: a literal with incremental indexing (inserts, may evict) and a size
//!   update (resizes, may evict); [`BlockScan`] spots both exactly as loona parses
//!   them. A block with neither decodes to a list that depends on its bytes and the
//!   table alone, and leaves the table as it was. The filter's own steps on that list
//!   (the decoded-size count, the `:authority` check) are pure functions of it.
//! - Encoding (loona-hpack 0.4.3 `Encoder`): its only state is its dynamic table.
//!   `encode_header_into` writes an indexed field or an indexed name with a literal
//!   value and leaves the table alone, or, for a name in neither table, writes a literal
//!   with incremental indexing (`0x40`) and inserts it; it never writes a size update.
//!   So output without a `01xxxxxx` representation left the encoder's table as it was,
//!   and the output for a list depends on the list and that table alone. (The output
//!   is scanned for size updates too, so this holds for any encoder whose only state is
//!   its table.) h2's decoder, which mirrors the encoder, leaves its table alone on
//!   such output too.
//! - So after rewriting a block whose input and output both leave their tables alone,
//!   the tables are exactly as they were before it, and the same bytes would decode to
//!   the same list and encode to the same output. The entry is kept only for such a
//!   block; any rewrite through loona replaces or drops it, and a reuse changes
//!   nothing, so the entry is valid whenever it is there.

use super::scan::BlockScan;

/// The largest block (input plus output bytes) kept, so an idle connection holds
/// little; a gRPC request block is a few hundred bytes.
const MAX_KEPT: usize = 4 * 1024;

/// A block's bytes and its rewrite, valid for the connection's current HPACK tables.
#[derive(Debug, Default)]
pub struct LastRewrite {
    kept: Option<(Vec<u8>, Vec<u8>)>,
}

impl LastRewrite {
    /// The stored rewrite of `block`, if it is the kept one.
    pub fn get(&self, block: &[u8]) -> Option<&[u8]> {
        match &self.kept {
            Some((input, output)) if input[..] == *block => Some(output),
            _ => None,
        }
    }

    /// Records that loona rewrote `block` (whose scan is `scan`) to `output`: keeps
    /// the pair if neither table changed, else drops what was kept.
    pub fn record(&mut self, block: Vec<u8>, scan: &BlockScan, output: Vec<u8>) {
        let output_changes_table = BlockScan::of(&output).is_none_or(|s| s.changes_table);
        self.kept = (!scan.changes_table
            && !output_changes_table
            && block.len() + output.len() <= MAX_KEPT)
            .then_some((block, output));
    }
}
