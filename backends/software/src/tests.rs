use super::*;
use keyward_core::conformance::ConformanceSuite;
use keyward_core::fsutil;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_all_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SoftwareBackend::new();
    let root = dir.path().join("keys");
    let suite = ConformanceSuite::new(&backend, |label| {
        KeyUri::file(root.join(format!("{label}.pem"))).unwrap()
    });
    suite.run_all(&Algorithm::ALL).await;
    assert_eq!(fsutil::mode_of(&root).unwrap(), 0o700);
    for entry in std::fs::read_dir(&root).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(fsutil::mode_of(&p).unwrap(), 0o600, "{}", p.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_wrapping() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SoftwareBackend::new();
    let root = dir.path().join("keks");
    let suite = ConformanceSuite::new(&backend, |label| KeyUri::file(root.join(label)).unwrap());
    suite.run_wrapping().await;
    let kek = root.join("wrap-kek");
    assert_eq!(fsutil::mode_of(&kek).unwrap(), 0o700);
    let mut versions: Vec<_> = std::fs::read_dir(&kek)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["v1.key", "v2.key"]);
    for v in &versions {
        let p = kek.join(v);
        assert_eq!(fsutil::mode_of(&p).unwrap(), 0o600, "{}", p.display());
        assert_eq!(std::fs::read(&p).unwrap().len(), 32);
    }
}

#[tokio::test]
async fn kek_version_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let uri = KeyUri::file(dir.path().join("kek")).unwrap();
    let kek = SoftwareBackend.generate_wrapper(&uri).await.unwrap();
    let blob = kek.encrypt(b"x", b"").await.unwrap();
    let v1 = dir.path().join("kek/v1.key");
    std::fs::set_permissions(&v1, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = kek.decrypt(&blob, b"").await.unwrap_err();
    assert!(keyward_core::chain_line(&e).contains("chmod 600"), "{e}");
}

#[tokio::test]
async fn refuses_world_readable_key_and_non_pkcs8() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.pem");
    let uri = KeyUri::file(&p).unwrap();
    SoftwareBackend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = SoftwareBackend.open(&uri).await.unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    let q = dir.path().join("rsa.pem");
    std::fs::write(
        &q,
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = SoftwareBackend
        .open(&KeyUri::file(&q).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("PKCS#8"), "{e}");
}

#[tokio::test]
async fn rejects_other_schemes() {
    let uri = KeyUri::parse("transit:x").unwrap();
    let e = SoftwareBackend.open(&uri).await.unwrap_err();
    assert!(matches!(e, Error::InvalidUri(_)), "{e:?}");
}

#[test]
fn pss_signer_from_the_same_key() {
    let uri = KeyUri::file("/nonexistent/x.pem").unwrap();
    let alg = Algorithm::RsaPkcs1Sha256(keyward_core::RsaBits::B2048);
    let (key, der) = SoftwareKey::generate(alg, uri.clone()).unwrap();
    let pss = SoftwareKey::from_pkcs8(&der, uri)
        .unwrap()
        .with_algorithm(Algorithm::RsaPssSha256(keyward_core::RsaBits::B2048))
        .unwrap();
    let sig = pss.sign_now(b"m").unwrap();
    keyward_core::verify_signature(pss.algorithm(), key.public_key_spki_der(), b"m", &sig).unwrap();
    assert!(pss.with_algorithm(Algorithm::Ed25519).is_err());
}
