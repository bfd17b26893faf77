//! `keyward audit verify`: checks one chain across files given oldest first, and names
//! the first line where it breaks.
//!
//! Where each kind of tampering is reported:
//! - a field edited in line K (hash not recomputed): line K, its own hash no longer
//!   matches;
//! - line K edited with its hash recomputed: line K, because line K+1's `prev` no
//!   longer matches it (the last line: only the head file notices);
//! - line K removed: line K (now holding the next record), a sequence gap;
//! - lines K and K+1 swapped: line K, its seq is out of order and the expected one
//!   comes at line K+1;
//! - lines removed from the end: the line after the last one, when the head file
//!   records a later sequence number;
//! - a torn last line (an interrupted append, or a cut): that line;
//! - a live log (the last file, not named like a rotated `NAME.N`) holding records
//!   without its head file: one past its last line, since a cut there would go unseen.
//!   A rotated file has no head; its end is vouched for by the next file's first record.

use std::fmt;
use std::path::{Path, PathBuf};

use super::record::{GENESIS, Record, line_hash};
use super::writer::read_head;
use super::{head_path, is_rotated};
use crate::Error;

/// A chain that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    /// How many records the files hold.
    pub records: u64,
    /// The first record's sequence number (above 1 when the chain continues an older,
    /// rotated file that was not given).
    pub first_seq: Option<u64>,
    /// The last record's sequence number.
    pub last_seq: Option<u64>,
    /// Whether a head file was found beside the last file and matched its end (false
    /// only for a chain with no records, or one whose last file is a rotated file).
    pub head_checked: bool,
}

/// The first place the chain breaks: `audit log FILE line N: WHAT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based); one past the last line for records missing from the end.
    pub line: usize,
    /// What is wrong there.
    pub what: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "audit log {} line {}: {}",
            self.file.display(),
            self.line,
            self.what
        )
    }
}

struct Line {
    file: usize,
    number: usize,
    bytes: Vec<u8>,
    complete: bool,
}

enum Stop {
    Broken(VerifyFailure),
    Io(Error),
}

/// Verifies the chain through `files` (oldest first), then the end of the last file
/// against its head file when there is one. The outer error is a file that cannot be
/// read; the inner one the first place the chain breaks.
pub fn verify(files: &[PathBuf]) -> Result<Result<VerifySummary, VerifyFailure>, Error> {
    match check(files) {
        Ok(s) => Ok(Ok(s)),
        Err(Stop::Broken(f)) => Ok(Err(f)),
        Err(Stop::Io(e)) => Err(e),
    }
}

fn check(files: &[PathBuf]) -> Result<VerifySummary, Stop> {
    let mut lines = Vec::new();
    let mut counts = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let data = std::fs::read(path)
            .map_err(|e| Stop::Io(Error::io(format!("cannot read {}", path.display()), e)))?;
        let mut n = 0;
        let mut rest = &data[..];
        while !rest.is_empty() {
            n += 1;
            let (bytes, complete, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(p) => (&rest[..p], true, &rest[p + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            lines.push(Line {
                file: i,
                number: n,
                bytes: bytes.to_vec(),
                complete,
            });
            rest = next;
        }
        counts.push(n);
    }
    let fail = |l: &Line, what: String| {
        Err(Stop::Broken(VerifyFailure {
            file: files[l.file].clone(),
            line: l.number,
            what,
        }))
    };
    // (index of the line, its seq, its hash) for the last good record.
    let mut prev: Option<(usize, u64, String)> = None;
    let mut first_seq = None;
    for (i, l) in lines.iter().enumerate() {
        if !l.complete {
            return fail(l, "torn last line: no newline at its end (an append was interrupted, or the file was cut)".into());
        }
        if l.bytes.is_empty() {
            return fail(
                l,
                "empty line (a line was blanked or an extra newline inserted)".into(),
            );
        }
        let rec = match Record::decode(&l.bytes) {
            Ok(r) => r,
            Err(why) => return fail(l, why),
        };
        match &prev {
            None => {
                if rec.seq == 1 && rec.prev != GENESIS {
                    return fail(l, "seq 1 does not start from the genesis value (records before it were removed)".into());
                }
                if rec.seq != 1 && rec.prev == GENESIS {
                    return fail(l, format!("seq {} claims to start a new chain", rec.seq));
                }
                first_seq = Some(rec.seq);
            }
            Some((pi, pseq, phash)) => {
                let expected = pseq + 1;
                if rec.seq != expected {
                    let mut what = seq_error(&lines, files, i, rec.seq, expected);
                    if l.number == 1 && l.file > 0 {
                        what.push_str(" (files must be given oldest first)");
                    }
                    return fail(l, what);
                }
                if rec.prev != *phash {
                    let p = &lines[*pi];
                    return fail(
                        p,
                        format!(
                            "record seq {pseq} was changed after it was written, or a record after it was removed ({} line {} names a different previous line)",
                            files[l.file].display(),
                            l.number
                        ),
                    );
                }
            }
        }
        prev = Some((i, rec.seq, line_hash(&l.bytes)));
    }
    let records = lines.len() as u64;
    let last_seq = prev.as_ref().map(|p| p.1);
    let Some(last_file) = files.last() else {
        return Ok(VerifySummary {
            records,
            first_seq,
            last_seq,
            head_checked: false,
        });
    };
    let head = match read_head(last_file) {
        Ok(h) => h,
        Err(e) => return Err(Stop::Io(e)),
    };
    let head_name = head_path(last_file);
    let last_count = counts.last().copied().unwrap_or(0);
    let end = |what: String| {
        Err(Stop::Broken(VerifyFailure {
            file: last_file.clone(),
            line: last_count + 1,
            what,
        }))
    };
    let Some(head) = head else {
        if records > 0 && !is_rotated(last_file) {
            return end(format!(
                "no head file {} beside the log, so records removed from its end cannot be detected (if it was lost, `keyward audit recover --log {}` sets the log aside and starts a new chain)",
                head_name.display(),
                last_file.display()
            ));
        }
        return Ok(VerifySummary {
            records,
            first_seq,
            last_seq,
            head_checked: false,
        });
    };
    match &prev {
        None if head.seq > 0 => {
            return end(format!(
                "the log is empty but {} records seq {}: records were removed",
                head_name.display(),
                head.seq
            ));
        }
        None => {}
        Some((pi, seq, hash)) => {
            if head.seq > *seq {
                return end(missing_at_end(*seq, head.seq, &head_name));
            }
            let at = if head.seq == *seq {
                Some((*pi, hash.clone()))
            } else {
                lines
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, l)| Record::seq_of(&l.bytes) == Some(head.seq))
                    .map(|(i, l)| (i, line_hash(&l.bytes)))
            };
            if let Some((i, h)) = at
                && h != head.hash
            {
                let l = &lines[i];
                return fail(
                    l,
                    format!(
                        "record seq {} was changed after it was written (it does not match {})",
                        head.seq,
                        head_name.display()
                    ),
                );
            }
        }
    }
    Ok(VerifySummary {
        records,
        first_seq,
        last_seq,
        head_checked: true,
    })
}

/// What a sequence number that is not the expected one means.
fn seq_error(lines: &[Line], files: &[PathBuf], at: usize, found: u64, expected: u64) -> String {
    if let Some(later) = lines[at + 1..]
        .iter()
        .find(|l| Record::seq_of(&l.bytes) == Some(expected))
    {
        return format!(
            "seq {found} is out of order: seq {expected} comes later, at {} line {} (lines were reordered)",
            files[later.file].display(),
            later.number
        );
    }
    if found > expected {
        let range = if found - 1 == expected {
            format!("seq {expected} is")
        } else {
            format!("seq {expected} to {} are", found - 1)
        };
        return format!("record {range} missing before this line (lines were removed)");
    }
    format!(
        "seq {found} after seq {}: a record was duplicated or moved back",
        expected - 1
    )
}

fn missing_at_end(last: u64, head: u64, head_name: &Path) -> String {
    let range = if head == last + 1 {
        format!("record seq {head} is")
    } else {
        format!("records seq {} to {head} are", last + 1)
    };
    format!(
        "{range} missing from the end: the log ends at seq {last} but {} records seq {head} (lines were removed from the end)",
        head_name.display()
    )
}
