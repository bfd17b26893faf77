//! One audit record and its exact line encoding.
//!
//! A line is the JSON object `{"seq":..,"time":..,"event":..,"fields":{..},"prev":..,
//! "hash":..}` with the members in that order. `prev` is the SHA-256 (hex) of the
//! previous line's exact bytes (without its newline), or [`GENESIS`] for the first
//! record of a chain. `hash` is the SHA-256 of the line's own bytes up to the `,"hash"`
//! member with `}` appended, so an edit that does not also recompute it is caught at
//! the edited line itself.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::sha256_hex;

/// The `prev` of the first record of a new chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_MEMBER: &str = ",\"hash\":\"";

/// A decoded audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain: 1 for the first record, then one more per line.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// What happened, e.g. `certificate_issued`.
    pub event: String,
    /// The event's details.
    pub fields: Map<String, Value>,
    /// SHA-256 (hex) of the previous line, or [`GENESIS`].
    pub prev: String,
    /// SHA-256 (hex) of this record's own content (see the module docs).
    pub hash: String,
}

#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: &'a str,
    event: &'a str,
    fields: &'a Map<String, Value>,
    prev: &'a str,
}

/// SHA-256 (hex) of a line's exact bytes (without its newline): the next record's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    sha256_hex(line)
}

impl Record {
    /// Encodes a record as one line (no newline), computing its `hash`.
    pub fn encode(
        seq: u64,
        time: &str,
        event: &str,
        fields: &Map<String, Value>,
        prev: &str,
    ) -> String {
        let body = serde_json::to_string(&Body {
            seq,
            time,
            event,
            fields,
            prev,
        })
        .expect("an audit record serializes");
        let hash = sha256_hex(body.as_bytes());
        format!("{}{HASH_MEMBER}{hash}\"}}", &body[..body.len() - 1])
    }

    /// Decodes one line and checks its own hash. The error says what is wrong.
    pub fn decode(line: &[u8]) -> Result<Record, String> {
        let text = line_text(line)?;
        let rec: Record = serde_json::from_str(text).map_err(not_a_record)?;
        check_seal(text, rec.seq, &rec.hash)?;
        Ok(rec)
    }

    /// Checks one line as [`Record::decode`] does (the same members, its own hash),
    /// without building its fields or checking the types of the members it skips;
    /// returns its sequence number. What continuing the chain after it needs: the last
    /// record of a `sign-csr --batch` chunk lists a thousand certificates.
    pub fn decode_seq(line: &[u8]) -> Result<u64, String> {
        /// A record's members, its content skipped but for the sequence number and hash.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Sealed<'a> {
            seq: u64,
            #[serde(rename = "time")]
            _time: IgnoredAny,
            #[serde(rename = "event")]
            _event: IgnoredAny,
            #[serde(rename = "fields")]
            _fields: IgnoredAny,
            #[serde(rename = "prev")]
            _prev: IgnoredAny,
            #[serde(borrow)]
            hash: Cow<'a, str>,
        }
        let text = line_text(line)?;
        let sealed: Sealed = serde_json::from_str(text).map_err(not_a_record)?;
        check_seal(text, sealed.seq, &sealed.hash)?;
        Ok(sealed.seq)
    }

    /// The sequence number of a line, read leniently (for naming where a record went).
    pub(crate) fn seq_of(line: &[u8]) -> Option<u64> {
        #[derive(Deserialize)]
        struct SeqOnly {
            seq: u64,
        }
        serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
    }
}

/// `line` as text.
fn line_text(line: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(line).map_err(|_| "not UTF-8 text".to_string())
}

/// Why a line does not decode as a record.
fn not_a_record(e: serde_json::Error) -> String {
    format!("not an audit record ({e}): the line was damaged or edited")
}

/// Checks that `text`, the line of record `seq`, ends with its hash member `hash` and
/// that its content up to that member hashes to `hash`.
fn check_seal(text: &str, seq: u64, hash: &str) -> Result<(), String> {
    let cut = text
        .rfind(HASH_MEMBER)
        .filter(|&i| text[i..] == format!("{HASH_MEMBER}{hash}\"}}"))
        .ok_or_else(|| {
            "the record does not end with its hash member: the line was edited".to_string()
        })?;
    let body = format!("{}}}", &text[..cut]);
    if sha256_hex(body.as_bytes()) != hash {
        return Err(format!(
            "record seq {seq} was edited: its content no longer matches its hash"
        ));
    }
    Ok(())
}
