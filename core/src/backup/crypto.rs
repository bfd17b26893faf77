//! The archive's envelope: header, Argon2id key derivation, ChaCha20-Poly1305 sealing.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::Error;

/// The first bytes of every archive.
pub const MAGIC: &[u8; 8] = b"KWBACKUP";
/// The header's length; the header is the AEAD's associated data.
pub const HEADER_LEN: usize = 52;
const FORMAT_VERSION: u16 = 1;
const KDF_ARGON2ID: u8 = 1;
const AEAD_CHACHA20_POLY1305: u8 = 1;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Upper bounds accepted when reading an archive, so a damaged or hostile header cannot
/// make a restore allocate gigabytes or run for hours before the tag check fails.
const MAX_MEMORY_KIB: u32 = 1 << 20;
const MAX_PASSES: u32 = 64;
const MAX_LANES: u32 = 16;

/// Argon2id cost parameters, recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Time cost (passes over the memory).
    pub passes: u32,
    /// Parallelism (lanes).
    pub lanes: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended setting with one lane
    /// (about a quarter of a second here), well above OWASP's Argon2id minimum.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            passes: 3,
            lanes: 1,
        }
    }
}

/// Encrypts `plaintext` under `passphrase` with a fresh salt and nonce; returns the
/// whole archive (header, ciphertext, tag). The plaintext is encrypted in place and
/// the buffer dropped (zeroized).
pub fn seal(
    passphrase: &[u8],
    params: KdfParams,
    mut plaintext: Zeroizing<Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut salt)
        .and_then(|()| aws_lc_rs::rand::fill(&mut nonce))
        .map_err(|_| Error::backend("the system random number generator failed"))?;
    let header = encode_header(params, &salt, &nonce);
    let key = aead_key(passphrase, &salt, params)?;
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&header[..]),
            &mut plaintext[..],
        )
        .map_err(|_| Error::backend("encrypting the archive failed"))?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(&plaintext);
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Checks the header of `archive` (magic, version, algorithms, plausible parameters)
/// without a passphrase, so a file that is no archive at all is refused before asking
/// for one.
pub fn check_header(archive: &[u8]) -> Result<KdfParams, Error> {
    parse_header(archive).map(|h| h.params)
}

/// Decrypts and authenticates `archive`; the plaintext comes back in a zeroizing buffer.
/// A wrong passphrase and a damaged archive give the same error: the AEAD cannot tell
/// them apart.
pub fn open(passphrase: &[u8], archive: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let h = parse_header(archive)?;
    let key = aead_key(passphrase, &h.salt, h.params)?;
    let mut buf = Zeroizing::new(archive[HEADER_LEN..].to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(h.nonce),
            Aad::from(&archive[..HEADER_LEN]),
            &mut buf[..],
        )
        .map_err(|_| Error::InvalidInput("wrong passphrase or corrupted archive".into()))?
        .len();
    buf.truncate(len);
    Ok(buf)
}

struct Header {
    params: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

fn encode_header(p: KdfParams, salt: &[u8; SALT_LEN], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    h.push(KDF_ARGON2ID);
    h.extend_from_slice(&p.memory_kib.to_be_bytes());
    h.extend_from_slice(&p.passes.to_be_bytes());
    h.extend_from_slice(&p.lanes.to_be_bytes());
    h.extend_from_slice(salt);
    h.push(AEAD_CHACHA20_POLY1305);
    h.extend_from_slice(nonce);
    debug_assert_eq!(h.len(), HEADER_LEN);
    h
}

fn parse_header(a: &[u8]) -> Result<Header, Error> {
    let corrupted = |what: &str| {
        Error::InvalidInput(format!("corrupted archive: {what} (wrong file or damaged)"))
    };
    if a.len() < MAGIC.len() || &a[..MAGIC.len()] != MAGIC {
        return Err(Error::InvalidInput(
            "not a keyward backup archive (no KWBACKUP header)".into(),
        ));
    }
    if a.len() < HEADER_LEN + TAG_LEN {
        return Err(corrupted("it is truncated"));
    }
    let be32 = |at: usize| u32::from_be_bytes(a[at..at + 4].try_into().expect("4 bytes"));
    let version = u16::from_be_bytes([a[8], a[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::InvalidInput(format!(
            "archive format version {version} is not supported (this keyward reads version {FORMAT_VERSION})"
        )));
    }
    if a[10] != KDF_ARGON2ID || a[39] != AEAD_CHACHA20_POLY1305 {
        return Err(corrupted("unknown key derivation or cipher"));
    }
    let params = KdfParams {
        memory_kib: be32(11),
        passes: be32(15),
        lanes: be32(19),
    };
    let plausible = (1..=MAX_LANES).contains(&params.lanes)
        && (1..=MAX_PASSES).contains(&params.passes)
        && (8 * params.lanes..=MAX_MEMORY_KIB).contains(&params.memory_kib);
    if !plausible {
        return Err(corrupted("implausible key derivation parameters"));
    }
    Ok(Header {
        params,
        salt: a[23..39].try_into().expect("salt"),
        nonce: a[40..52].try_into().expect("nonce"),
    })
}

/// Argon2id(passphrase, salt) as a ChaCha20-Poly1305 key; the derived bytes are zeroized.
fn aead_key(passphrase: &[u8], salt: &[u8], p: KdfParams) -> Result<LessSafeKey, Error> {
    let params = argon2::Params::new(p.memory_kib, p.passes, p.lanes, Some(KEY_LEN))
        .map_err(|e| Error::InvalidInput(format!("unusable key derivation parameters: {e}")))?;
    let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    kdf.hash_password_into(passphrase, salt, &mut key[..])
        .map_err(|e| Error::backend(format!("key derivation failed: {e}")))?;
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key[..])
        .map_err(|_| Error::backend("cannot set up the archive cipher"))?;
    Ok(LessSafeKey::new(unbound))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn seal_open_and_every_byte_is_authenticated() {
        let a = seal(b"pass", FAST, Zeroizing::new(b"secret payload".to_vec())).unwrap();
        assert_eq!(&open(b"pass", &a).unwrap()[..], b"secret payload");
        assert!(!a.windows(6).any(|w| w == b"secret"));
        let e = open(b"wrong", &a).unwrap_err();
        assert_eq!(e.to_string(), "wrong passphrase or corrupted archive");
        for i in 8..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x01;
            assert!(
                open(b"pass", &b).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        assert!(open(b"pass", &a[..a.len() - 1]).is_err());
        assert!(open(b"pass", &a[..20]).is_err());
        assert!(check_header(b"PK\x03\x04 zip").is_err());
    }

    #[test]
    fn two_archives_of_the_same_data_differ() {
        let one = seal(b"p", FAST, Zeroizing::new(vec![7; 10])).unwrap();
        let two = seal(b"p", FAST, Zeroizing::new(vec![7; 10])).unwrap();
        assert_ne!(one[23..52], two[23..52], "salt and nonce must be fresh");
        assert_eq!(check_header(&one).unwrap(), FAST);
    }
}
