//! The wrapped-blob format: what [`KeyWrapper`](super::KeyWrapper) hands out for a
//! data key or an encrypted payload, and takes back to decrypt it.
//!
//! A blob is a backend-neutral header followed by the backend's own ciphertext:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "KWRP"
//! 4       1     format version, 1
//! 5       1     kind: 1 = data key, 2 = payload
//! 6       1     length n of the scheme name (1..=16)
//! 7       n     scheme of the KEK that made it, ASCII: "file", "transit", "awskms"
//! 7+n     4     KEK version, big-endian, >= 1
//! 11+n    rest  backend ciphertext (non-empty), opaque to core:
//!                 file:    12-byte nonce || AES-256-GCM ciphertext || 16-byte tag
//!                 transit: the bytes after Transit's "vault:vN:" prefix (N = the version)
//!                 awskms:  the KMS CiphertextBlob (which names its key material itself)
//! ```
//!
//! The header says everything needed to pick the key (scheme, version) and what the
//! blob holds, so a blob handed to the wrong KEK, or a payload passed off as a data key,
//! is refused with a clear error before any backend is asked.

use crate::Error;

/// The four bytes every wrapped blob starts with.
const MAGIC: &[u8; 4] = b"KWRP";
/// The only format version written and read.
const FORMAT_VERSION: u8 = 1;
/// The longest scheme name the header carries.
const MAX_SCHEME_LEN: usize = 16;

/// What a wrapped blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// A 256-bit data key from `generate_data_key`.
    DataKey,
    /// A caller's payload from `encrypt`.
    Payload,
}

impl BlobKind {
    fn byte(self) -> u8 {
        match self {
            BlobKind::DataKey => 1,
            BlobKind::Payload => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BlobKind::DataKey => "a wrapped data key",
            BlobKind::Payload => "an encrypted payload",
        }
    }
}

/// A backend's ciphertext and the KEK version that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The KEK version (1 for a new key; each rotation adds one).
    pub version: u32,
    /// The backend's ciphertext, opaque to core.
    pub ciphertext: Vec<u8>,
}

/// Encodes a blob of `kind` made by a KEK of `scheme`.
pub fn encode(scheme: &str, kind: BlobKind, sealed: &Sealed) -> Vec<u8> {
    debug_assert!(!scheme.is_empty() && scheme.len() <= MAX_SCHEME_LEN);
    let mut out = Vec::with_capacity(11 + scheme.len() + sealed.ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind.byte());
    out.push(scheme.len() as u8);
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(&sealed.version.to_be_bytes());
    out.extend_from_slice(&sealed.ciphertext);
    out
}

/// Decodes a blob that must be of `kind` and made by a KEK of `scheme`; anything else
/// is `InvalidInput` naming what is wrong.
pub fn decode(blob: &[u8], scheme: &str, kind: BlobKind) -> Result<Sealed, Error> {
    let bad = |why: String| Error::InvalidInput(format!("not a keyward wrapped blob: {why}"));
    if blob.len() < 7 || &blob[..4] != MAGIC {
        return Err(bad("no KWRP header".into()));
    }
    if blob[4] != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (this keyward reads {FORMAT_VERSION})",
            blob[4]
        )));
    }
    let found_kind = match blob[5] {
        1 => BlobKind::DataKey,
        2 => BlobKind::Payload,
        k => return Err(bad(format!("unknown kind {k}"))),
    };
    let n = blob[6] as usize;
    if n == 0 || n > MAX_SCHEME_LEN || blob.len() < 7 + n + 4 {
        return Err(bad("truncated header".into()));
    }
    let found_scheme = std::str::from_utf8(&blob[7..7 + n]).unwrap_or("?");
    if found_scheme != scheme {
        return Err(Error::InvalidInput(format!(
            "the blob was made by a {found_scheme}: key, not by this {scheme}: key"
        )));
    }
    if found_kind != kind {
        return Err(Error::InvalidInput(format!(
            "the blob is {}, not {}",
            found_kind.name(),
            kind.name()
        )));
    }
    let version = u32::from_be_bytes(blob[7 + n..11 + n].try_into().expect("4 bytes"));
    let ciphertext = blob[11 + n..].to_vec();
    if version == 0 || ciphertext.is_empty() {
        return Err(bad("version 0 or no ciphertext".into()));
    }
    Ok(Sealed {
        version,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_header_field_is_checked() {
        let sealed = Sealed {
            version: 7,
            ciphertext: vec![1, 2, 3],
        };
        let blob = encode("transit", BlobKind::Payload, &sealed);
        assert_eq!(&blob[..4], b"KWRP");
        assert_eq!(decode(&blob, "transit", BlobKind::Payload).unwrap(), sealed);
        let e = decode(&blob, "file", BlobKind::Payload).unwrap_err();
        assert!(e.to_string().contains("transit: key"), "{e}");
        let e = decode(&blob, "transit", BlobKind::DataKey).unwrap_err();
        assert!(e.to_string().contains("encrypted payload"), "{e}");
        let mut v2 = blob.clone();
        v2[4] = 2;
        assert!(decode(&v2, "transit", BlobKind::Payload).is_err());
        assert!(decode(&blob[..12], "transit", BlobKind::Payload).is_err());
        assert!(decode(b"garbage", "transit", BlobKind::Payload).is_err());
        let mut zero = blob.clone();
        zero[14..18].copy_from_slice(&[0; 4]);
        assert!(decode(&zero, "transit", BlobKind::Payload).is_err());
    }
}
