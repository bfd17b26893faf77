//! The end of a log file: its last complete line, and any torn bytes after it (an
//! append cut short by a crash), read from the end without loading the whole file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::Error;

/// The end of a log file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Tail {
    /// The last complete line (without its newline), if the file has one.
    pub(super) last_line: Option<Vec<u8>>,
    /// Where complete lines end (the file length when nothing is torn).
    pub(super) complete_len: u64,
    /// Bytes after the last newline: a torn last line.
    pub(super) torn: u64,
}

/// Reads the tail of `file` (`len` bytes long); `path` names it in errors.
pub(super) fn read_tail(file: &File, len: u64, path: &Path) -> Result<Tail, Error> {
    let mut window: u64 = 8192;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; usize::try_from(len - start).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if let Some(tail) = parse(&buf, start) {
            return Ok(tail);
        }
        window = window.saturating_mul(4);
    }
}

/// The tail from the last `buf` bytes of a file (starting at offset `start`), or `None`
/// when more of the file must be read to find the line boundaries.
fn parse(buf: &[u8], start: u64) -> Option<Tail> {
    let at_file_start = start == 0;
    let Some(nl) = buf.iter().rposition(|&b| b == b'\n') else {
        // No newline in the window: all torn if this is the whole file.
        return at_file_start.then_some(Tail {
            last_line: None,
            complete_len: 0,
            torn: buf.len() as u64,
        });
    };
    let torn = (buf.len() - nl - 1) as u64;
    let line_start = match buf[..nl].iter().rposition(|&b| b == b'\n') {
        Some(p) => p + 1,
        None if at_file_start => 0,
        None => return None,
    };
    Some(Tail {
        last_line: Some(buf[line_start..nl].to_vec()),
        complete_len: start + nl as u64 + 1,
        torn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_line_and_torn_bytes() {
        assert_eq!(parse(b"", 0).unwrap(), Tail::default());
        let t = parse(b"a\nbb\ncc", 0).unwrap();
        assert_eq!(t.last_line.as_deref(), Some(&b"bb"[..]));
        assert_eq!((t.complete_len, t.torn), (5, 2));
        let t = parse(b"a\nbb\n", 0).unwrap();
        assert_eq!(
            (t.last_line.unwrap(), t.complete_len, t.torn),
            (b"bb".to_vec(), 5, 0)
        );
        let t = parse(b"only\n", 0).unwrap();
        assert_eq!(t.last_line.as_deref(), Some(&b"only"[..]));
        assert!(
            parse(b"xx\n", 10).is_none(),
            "the line may start before the window"
        );
        let t = parse(b"x\nyy\n", 10).unwrap();
        assert_eq!((t.complete_len, t.torn), (15, 0));
        let t = parse(b"torn", 0).unwrap();
        assert_eq!((t.last_line, t.complete_len, t.torn), (None, 0, 4));
    }

    #[test]
    fn reads_a_line_longer_than_the_first_window() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        let long = "x".repeat(20_000);
        std::fs::write(&p, format!("first\n{long}\n")).unwrap();
        let f = File::open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        let t = read_tail(&f, len, &p).unwrap();
        assert_eq!(t.last_line.unwrap().len(), 20_000);
        assert_eq!((t.complete_len, t.torn), (len, 0));
    }
}
