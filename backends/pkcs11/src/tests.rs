//! Unit tests of the parts that need no token: error words, CKR names, DER building.

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use keyward_core::Error;

use crate::errors;
use crate::spki::{self, Curve};

fn ck(rv: RvError, function: Function) -> CkError {
    CkError::Pkcs11(rv, function)
}

#[test]
fn ckr_names_are_the_constants() {
    assert_eq!(errors::ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
    assert_eq!(
        errors::ckr_name(RvError::SessionHandleInvalid),
        "CKR_SESSION_HANDLE_INVALID"
    );
    assert_eq!(
        errors::ckr_name(RvError::UserPinNotInitialized),
        "CKR_USER_PIN_NOT_INITIALIZED"
    );
    assert_eq!(
        errors::ckr_name(RvError::VendorDefined(0x8000_0001)),
        "CKR_VENDOR_DEFINED(0x80000001)"
    );
}

#[test]
fn wrong_pin_is_said_in_plain_words_with_the_code_as_source() {
    let e = errors::map(
        ck(RvError::PinIncorrect, Function::Login),
        "logging in",
        "token 'ca-token'",
    );
    assert_eq!(e.to_string(), "PIN incorrect for token 'ca-token'");
    assert_eq!(
        keyward_core::chain_line(&e),
        "PIN incorrect for token 'ca-token': CKR_PIN_INCORRECT from C_Login"
    );
    assert!(!e.is_retryable());
}

// SoftHSM never locks a PIN (it only raises CKF_USER_PIN_COUNT_LOW after wrong tries),
// so the locked-PIN message is checked here, on the mapping itself.
#[test]
fn locked_pin_is_said_in_plain_words() {
    let e = errors::map(
        ck(RvError::PinLocked, Function::Login),
        "logging in",
        "token 'ca-token'",
    );
    let line = keyward_core::chain_line(&e);
    assert!(
        line.starts_with("PIN locked for token 'ca-token'"),
        "{line}"
    );
    assert!(line.contains("CKR_PIN_LOCKED"), "{line}");
}

#[test]
fn other_codes_carry_the_raw_name_and_removal_is_retryable() {
    let e = errors::map(
        ck(RvError::FunctionFailed, Function::Sign),
        "signing with key 'k' on token 't'",
        "token 't'",
    );
    assert_eq!(
        e.to_string(),
        "signing with key 'k' on token 't': CKR_FUNCTION_FAILED from C_Sign"
    );
    let e = errors::map(
        ck(RvError::DeviceRemoved, Function::Sign),
        "signing",
        "token 't'",
    );
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("CKR_DEVICE_REMOVED"), "{e}");
    let e = errors::map(
        ck(RvError::MechanismInvalid, Function::SignInit),
        "signing",
        "token 't'",
    );
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
}

#[test]
fn outage_errors_are_retryable_and_name_the_cause() {
    let e = errors::still_failing(
        ck(RvError::SessionHandleInvalid, Function::SignInit),
        "signing with key 'k' on token 't'",
        "token 't'",
    );
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(
        e.to_string(),
        "signing with key 'k' on token 't': token 't' is not available \
         (CKR_SESSION_HANDLE_INVALID from C_SignInit, also after reopening its sessions)"
    );
    let e = errors::token_gone("token 't'", std::path::Path::new("/m.so"), "not listed");
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("token 't' is not available in PKCS#11 module /m.so: not listed"),
        "{e}"
    );
}

#[test]
fn recovery_kinds() {
    use errors::Recovery;
    let r = |rv| errors::recovery_for(&ck(rv, Function::Sign));
    assert_eq!(r(RvError::SessionHandleInvalid), Some(Recovery::Reset));
    assert_eq!(r(RvError::SessionClosed), Some(Recovery::Reset));
    assert_eq!(r(RvError::DeviceRemoved), Some(Recovery::Reset));
    assert_eq!(r(RvError::TokenNotPresent), Some(Recovery::Reset));
    assert_eq!(r(RvError::SlotIdInvalid), Some(Recovery::Reset));
    assert_eq!(r(RvError::TokenNotRecognized), Some(Recovery::Reset));
    assert_eq!(r(RvError::DeviceError), Some(Recovery::Reset));
    assert_eq!(r(RvError::UserNotLoggedIn), Some(Recovery::Reopen));
    assert_eq!(r(RvError::KeyHandleInvalid), Some(Recovery::Relogin));
    assert_eq!(
        r(RvError::CryptokiNotInitialized),
        Some(Recovery::Reinitialize)
    );
    assert_eq!(r(RvError::PinIncorrect), None);
    assert_eq!(r(RvError::FunctionFailed), None);
    // tpm2-pkcs11 after its TPM came back: reload the module to reconnect; but a
    // refused key pair template answers the same code and is no outage.
    assert_eq!(r(RvError::GeneralError), Some(Recovery::Reload));
    assert_eq!(
        errors::recovery_for(&ck(RvError::GeneralError, Function::GenerateKeyPair)),
        None
    );
}

#[test]
fn session_cap_respects_the_tokens_limits() {
    use crate::token::session_cap;
    use cryptoki::slot::Limit;
    assert_eq!(session_cap(4, Limit::Max(2), Limit::Infinite), 2);
    assert_eq!(session_cap(4, Limit::Infinite, Limit::Max(1)), 1);
    assert_eq!(session_cap(4, Limit::Unavailable, Limit::Unavailable), 4);
    // tpm2-pkcs11 reports its session table's size, 1024.
    assert_eq!(session_cap(2, Limit::Max(1024), Limit::Max(1024)), 2);
}

#[test]
fn ec_point_raw_or_wrapped_gives_the_same_spki() {
    let mut point = vec![0x04];
    point.extend((1..=64).map(|i| i as u8));
    let raw = spki::ec_spki(Curve::P256, &point).unwrap();
    let mut wrapped = vec![0x04, 65];
    wrapped.extend_from_slice(&point);
    assert_eq!(spki::ec_spki(Curve::P256, &wrapped).unwrap(), raw);
    // The bit string inside the SPKI is the point itself.
    assert_eq!(keyward_core::subject_public_key(&raw).unwrap(), point);
    assert!(spki::ec_spki(Curve::P384, &wrapped).is_err());

    let ed = [7u8; 32];
    let mut ed_wrapped = vec![0x04, 32];
    ed_wrapped.extend_from_slice(&ed);
    let spki = spki::ec_spki(Curve::Ed25519, &ed_wrapped).unwrap();
    assert_eq!(keyward_core::subject_public_key(&spki).unwrap(), ed);
    assert_eq!(spki.len(), 44, "Ed25519 SPKI is 44 bytes");
}

#[test]
fn rsa_spki_matches_a_software_key() {
    // SubjectPublicKeyInfo { rsaEncryption, RSAPublicKey { n, e } } with DER integers.
    let n = [0xc5u8; 256];
    let spki = keyward_core::der::rsa_spki(&n, &[0x01, 0x00, 0x01]);
    let inner = keyward_core::subject_public_key(&spki).unwrap();
    // SEQUENCE { INTEGER (0x00 pad + 256 bytes), INTEGER 65537 }
    assert_eq!(&inner[..4], &[0x30, 0x82, 0x01, 0x0a]);
    assert_eq!(&inner[4..8], &[0x02, 0x82, 0x01, 0x01]);
    assert_eq!(inner[8], 0x00);
    assert_eq!(&inner[inner.len() - 5..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    assert_eq!(spki::bit_len(&n), 2048);
    assert_eq!(spki::bit_len(&[0x00, 0x01, 0x00]), 9);
}

#[test]
fn curves_from_params() {
    assert_eq!(Curve::from_params(spki::P256_PARAMS), Some(Curve::P256));
    assert_eq!(Curve::from_params(spki::P384_PARAMS), Some(Curve::P384));
    assert_eq!(
        Curve::from_params(b"\x13\x0cedwards25519"),
        Some(Curve::Ed25519)
    );
    assert_eq!(Curve::from_params(&[0x06, 0x01, 0x00]), None);
}
