//! Signing paths, URI forms and configuration sources, against moto_server.

mod common;

use keyward_awskms::{AwsKmsBackend, KmsSettings};
use keyward_core::{Algorithm, Error, HashAlg, KeyBackend, KeyUri, RsaBits, verify_signature};

#[tokio::test]
async fn messages_over_4096_bytes_are_sent_as_their_digest() {
    let backend = AwsKmsBackend::new(common::settings());
    assert_eq!(backend.settings().raw_message_limit, 4096);
    let uri = common::alias_uri(&common::run_prefix(), "digest");
    let signer = backend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let spki = signer.public_key_spki_der();

    // Up to the limit the message goes RAW: the signature is over the message.
    let at_limit = vec![0x41; 4096];
    let sig = signer.sign(&at_limit).await.unwrap();
    verify_signature(signer.algorithm(), spki, &at_limit, &sig).unwrap();

    // Above it, only the SHA-256 digest is sent as DIGEST. moto ignores MessageType
    // and hashes what it gets, so its signature is over the 32-byte digest itself:
    // this shows the digest, computed here, is what went over the wire.
    let long = vec![0x42; 4097];
    let digest = HashAlg::Sha256.digest(&long);
    let sig = signer.sign(&long).await.unwrap();
    verify_signature(signer.algorithm(), spki, &digest, &sig).unwrap();
    assert!(verify_signature(signer.algorithm(), spki, &long, &sig).is_err());
}

#[tokio::test]
async fn rsa_pss_generate_gives_a_pss_signer_and_open_gives_pkcs1() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "pss");
    let pss = Algorithm::RsaPssSha256(RsaBits::B2048);
    let signer = backend.generate(&uri, pss).await.unwrap();
    assert_eq!(signer.algorithm(), pss);
    let sig = signer.sign(b"pss").await.unwrap();
    verify_signature(pss, signer.public_key_spki_der(), b"pss", &sig).unwrap();

    let opened = backend.open(&uri).await.unwrap();
    let pkcs1 = Algorithm::RsaPkcs1Sha256(RsaBits::B2048);
    assert_eq!(opened.algorithm(), pkcs1);
    let sig = opened.sign(b"pkcs1").await.unwrap();
    verify_signature(pkcs1, opened.public_key_spki_der(), b"pkcs1", &sig).unwrap();
}

#[tokio::test]
async fn ed25519_is_unsupported_by_name_and_creates_nothing() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "ed");
    match backend.generate(&uri, Algorithm::Ed25519).await {
        Err(Error::Unsupported(m)) => assert!(m.contains("ed25519"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(matches!(backend.open(&uri).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn generate_needs_an_alias_uri() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = KeyUri::parse("awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
    match backend.generate(&uri, Algorithm::EcdsaP256Sha256).await {
        Err(Error::Unsupported(m)) => assert!(m.contains("alias"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn key_id_and_arn_uris_open_the_same_key() {
    let backend = AwsKmsBackend::new(common::settings());
    let uri = common::alias_uri(&common::run_prefix(), "forms");
    let signer = backend
        .generate(&uri, Algorithm::EcdsaP384Sha384)
        .await
        .unwrap();
    let client = backend.sdk_client(common::kms(&uri)).await.unwrap();
    let meta = client
        .describe_key()
        .key_id(common::kms(&uri).key_id())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    for form in [
        format!("awskms:key-id={}", meta.key_id()),
        format!("awskms:{}", meta.arn().unwrap()),
    ] {
        let other = KeyUri::parse(&form).unwrap();
        let opened = backend.open(&other).await.unwrap();
        assert_eq!(opened.uri(), &other);
        assert_eq!(opened.algorithm(), Algorithm::EcdsaP384Sha384);
        assert_eq!(opened.public_key_spki_der(), signer.public_key_spki_der());
        let sig = opened.sign(b"by id").await.unwrap();
        verify_signature(
            opened.algorithm(),
            opened.public_key_spki_der(),
            b"by id",
            &sig,
        )
        .unwrap();
    }
}

#[tokio::test]
async fn config_comes_from_the_standard_aws_environment() {
    let endpoint = common::endpoint();
    let env_endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL not set: run the tests through scripts/test.sh")
    });
    assert_eq!(env_endpoint, endpoint, "scripts/moto.sh exports both");
    assert!(
        std::env::var_os("AWS_REGION").is_some(),
        "AWS_REGION not set: run the tests through scripts/test.sh"
    );
    // No region, endpoint or profile in keyward's settings: all from the environment.
    let backend = AwsKmsBackend::new(KmsSettings::default());
    let uri = common::alias_uri(&common::run_prefix(), "env");
    let signer = backend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    let sig = signer.sign(b"env").await.unwrap();
    verify_signature(
        signer.algorithm(),
        signer.public_key_spki_der(),
        b"env",
        &sig,
    )
    .unwrap();
}

#[tokio::test]
async fn uri_endpoint_overrides_the_settings() {
    let dead = format!("http://127.0.0.1:{}", common::closed_port());
    let backend = AwsKmsBackend::new(common::settings_for(&dead));
    let label = format!("{}/override", common::run_prefix());
    let encoded: String = common::endpoint()
        .bytes()
        .map(|b| format!("%{b:02x}"))
        .collect();
    let uri = KeyUri::parse(&format!("awskms:alias/{label}?endpoint={encoded}")).unwrap();
    let signer = backend
        .generate(&uri, Algorithm::EcdsaP256Sha256)
        .await
        .unwrap();
    assert_eq!(signer.uri(), &uri);
    let sig = signer.sign(b"override").await.unwrap();
    verify_signature(
        signer.algorithm(),
        signer.public_key_spki_der(),
        b"override",
        &sig,
    )
    .unwrap();
}
