//! Every error a user can meet, each with its message checked, and no PIN in any of them.
#![forbid(unsafe_code)]

mod common;

use common::TestToken;
use keyward_core::{Algorithm, Error, KeyBackend, KeyUri, chain_line};
use keyward_pkcs11::{Pkcs11Backend, list_slots};

fn uri(s: &str) -> KeyUri {
    KeyUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

async fn open_err(backend: &Pkcs11Backend, uri: &KeyUri) -> Error {
    match backend.open(uri).await {
        Ok(s) => panic!("open {uri} succeeded: {s:?}"),
        Err(e) => {
            eprintln!("open {uri}\n  -> {}", chain_line(&e));
            e
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_says_pin_incorrect_for_the_token() {
    let token = TestToken::new("wrongpin");
    let backend = Pkcs11Backend::new(None);
    let wrong = "not-the-pin-31337";
    let bad = uri(&format!(
        "pkcs11:token={};object=k?module-path={}&pin-value={wrong}",
        token.label,
        token.module.display()
    ));
    let e = open_err(&backend, &bad).await;
    let line = chain_line(&e);
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("PIN incorrect for token '{}'", token.label)
    );
    assert!(line.contains("CKR_PIN_INCORRECT"), "{line}");
    assert!(
        !line.contains(wrong) && !format!("{e:?}").contains(wrong),
        "{line}"
    );

    // Once the right PIN logged in, a different PIN is still refused (the module itself
    // would just answer "already logged in").
    backend
        .generate(&token.key_uri("k"), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let e = open_err(&backend, &bad).await;
    assert_eq!(
        e.to_string(),
        format!("PIN incorrect for token '{}'", token.label)
    );
    assert!(!chain_line(&e).contains(wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_label_lists_the_labels_present() {
    let a = TestToken::new("present-a");
    let b = TestToken::new("present-b");
    let backend = Pkcs11Backend::new(None);
    let e = open_err(
        &backend,
        &uri(&format!(
            "pkcs11:token=no-such-token;object=k?module-path={}&pin-value=1234",
            a.module.display()
        )),
    )
    .await;
    let line = chain_line(&e);
    assert!(
        line.starts_with("no token labelled 'no-such-token'"),
        "{line}"
    );
    assert!(line.contains("tokens present: "), "{line}");
    assert!(
        line.contains(&format!("'{}'", a.label)) && line.contains(&format!("'{}'", b.label)),
        "{line}"
    );
    assert!(!line.contains("1234"), "{line}");

    let e = open_err(
        &backend,
        &uri(&format!(
            "pkcs11:serial=0000000000000000;object=k?module-path={}",
            a.module.display()
        )),
    )
    .await;
    let line = chain_line(&e);
    assert!(
        line.starts_with("no token with serial '0000000000000000'"),
        "{line}"
    );
    assert!(line.contains(&format!("'{}' (serial ", a.label)), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloadable_module_names_the_path_and_the_reason() {
    let backend = Pkcs11Backend::new(None);
    let missing = "/nonexistent/libnothing-pkcs11.so";
    let e = open_err(
        &backend,
        &uri(&format!("pkcs11:token=t;object=k?module-path={missing}")),
    )
    .await;
    let line = chain_line(&e);
    assert!(line.starts_with("cannot load PKCS#11 module"), "{line}");
    assert!(line.contains(missing), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");

    // A file that is not a shared library at all.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"not an ELF file").unwrap();
    let e = list_slots(&junk, false).unwrap_err();
    let line = chain_line(&e);
    assert!(line.contains(&junk.display().to_string()), "{line}");
    assert!(
        line.contains("invalid ELF header") || line.contains("too short"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_is_not_found() {
    let token = TestToken::new("missing");
    let backend = Pkcs11Backend::new(None);
    let e = open_err(&backend, &token.key_uri("never-made")).await;
    match &e {
        Error::NotFound(m) => {
            assert!(
                m.contains("'never-made'") && m.contains(&token.label),
                "{m}"
            )
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let e = open_err(&backend, &token.with_path("id=%de%ad", "")).await;
    assert!(
        matches!(&e, Error::NotFound(m) if m.contains("id dead")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_without_pin_module_or_key_is_refused_in_words() {
    let token = TestToken::new("nopin");
    let backend = Pkcs11Backend::new(None);
    let e = open_err(
        &backend,
        &uri(&format!(
            "pkcs11:token={};object=k?module-path={}",
            token.label,
            token.module.display()
        )),
    )
    .await;
    assert!(e.to_string().contains("requires a user PIN"), "{e}");
    assert!(e.to_string().contains("pin-source="), "{e}");

    let e = open_err(
        &backend,
        &uri(&format!(
            "pkcs11:token={};object=k?module-path={}&pin-source=env:KEYWARD_NO_SUCH_PIN_VAR",
            token.label,
            token.module.display()
        )),
    )
    .await;
    assert!(e.to_string().contains("KEYWARD_NO_SUCH_PIN_VAR"), "{e}");

    let e = open_err(
        &backend,
        &uri(&format!(
            "pkcs11:token={}?module-path={}",
            token.label,
            token.module.display()
        )),
    )
    .await;
    assert!(matches!(e, Error::InvalidUri(_)), "{e:?}");
    assert!(e.to_string().contains("names no key"), "{e}");

    let e = backend
        .generate(&token.with_path("id=%01", ""), Algorithm::EcdsaP256Sha256)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("object=LABEL"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_comes_from_uri_then_default_then_environment() {
    let token = TestToken::new("modpath");
    let bare = uri(&format!(
        "pkcs11:token={};object=k?pin-source=file:{}",
        token.label,
        token.pin_file.display()
    ));
    let KeyUri::Pkcs11(p11) = &bare else {
        unreachable!()
    };
    // The default given to the backend.
    let backend = Pkcs11Backend::new(Some(token.module.clone()));
    assert_eq!(backend.module_for(p11).unwrap(), token.module);
    backend
        .generate(&bare, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    // The URI wins over the default.
    let with_path = token.key_uri("k");
    let KeyUri::Pkcs11(p) = &with_path else {
        unreachable!()
    };
    let other_default = Pkcs11Backend::new(Some("/nonexistent/other.so".into()));
    assert_eq!(other_default.module_for(p).unwrap(), token.module);
    // Neither, and no KEYWARD_PKCS11_MODULE (this test binary never sets it).
    assert!(std::env::var_os(keyward_pkcs11::MODULE_ENV).is_none());
    let e = Pkcs11Backend::new(None).open(&bare).await.unwrap_err();
    assert!(e.to_string().contains(keyward_pkcs11::MODULE_ENV), "{e}");
    assert!(e.to_string().contains("module-path="), "{e}");
}
