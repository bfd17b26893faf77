use super::*;

fn err(s: &str) -> String {
    KeyUri::parse(s).unwrap_err().to_string()
}

#[test]
fn file_forms() {
    for s in [
        "file:/var/lib/k/ca.pem",
        "file:///var/lib/k/ca.pem",
        "file://localhost/var/lib/k/ca.pem",
    ] {
        let u = KeyUri::parse(s).unwrap();
        assert_eq!(u.to_string(), "file:/var/lib/k/ca.pem");
        assert_eq!(u.scheme(), "file");
    }
    let u = KeyUri::parse("file:/tmp/a%20b.pem").unwrap();
    let KeyUri::File(f) = &u else { panic!() };
    assert_eq!(f.path, PathBuf::from("/tmp/a b.pem"));
    assert_eq!(u.to_string(), "file:/tmp/a%20b.pem");
    assert!(
        KeyUri::parse("file:rel/key.pem")
            .unwrap()
            .to_string()
            .starts_with("file:/")
    );
}

#[test]
fn file_errors_name_the_part() {
    assert!(err("file:").contains("empty path"));
    assert!(err("file:/a%zz").contains("percent-encoding"));
    assert!(err("file:/a?b").contains("'?'"));
}

#[test]
fn scheme_errors() {
    assert!(err("/no/scheme").contains("no scheme"));
    assert!(err("gcpkms:foo").contains("unknown scheme 'gcpkms'"));
}

#[test]
fn pkcs11_full_form_round_trips() {
    let s = "pkcs11:token=ca%20token;serial=0123;object=root-ca;id=%01%02;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyward/pin&max-sessions=4";
    let KeyUri::Pkcs11(u) = KeyUri::parse(s).unwrap() else {
        panic!()
    };
    assert_eq!(u.token.as_deref(), Some("ca token"));
    assert_eq!(u.serial.as_deref(), Some("0123"));
    assert_eq!(u.object.as_deref(), Some("root-ca"));
    assert_eq!(u.id.as_deref(), Some(&[1u8, 2][..]));
    assert_eq!(u.class, Some(ObjectClass::PrivateKey));
    assert_eq!(
        u.module_path,
        Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
    );
    assert_eq!(
        u.pin_source,
        Some(PinSource::File("/etc/keyward/pin".into()))
    );
    assert_eq!(u.max_sessions, Some(4));
    let again = KeyUri::parse(&KeyUri::Pkcs11(u.clone()).to_string()).unwrap();
    assert_eq!(again, KeyUri::Pkcs11(u));
}

#[test]
fn pkcs11_pin_value_is_never_displayed() {
    let u = KeyUri::parse("pkcs11:token=t;object=o?pin-value=s3cr3t-9911").unwrap();
    let KeyUri::Pkcs11(p) = &u else { panic!() };
    assert_eq!(p.pin().unwrap().unwrap().as_str(), "s3cr3t-9911");
    assert!(!u.to_string().contains("s3cr3t"));
    assert!(!format!("{u:?}").contains("s3cr3t"));
    assert!(!format!("{p:?}").contains("s3cr3t"));
    let e = err("pkcs11:token=t;bogus?pin-value=s3cr3t-9911");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn pkcs11_pin_sources() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pin");
    std::fs::write(&f, "1234\nignored\n").unwrap();
    let KeyUri::Pkcs11(u) =
        KeyUri::parse(&format!("pkcs11:token=t?pin-source=file:{}", f.display())).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.pin().unwrap().unwrap().as_str(), "1234");
    let KeyUri::Pkcs11(u) =
        KeyUri::parse("pkcs11:token=t?pin-source=env:KEYWARD_TEST_NO_SUCH_VAR").unwrap()
    else {
        panic!()
    };
    assert!(
        u.pin()
            .unwrap_err()
            .to_string()
            .contains("KEYWARD_TEST_NO_SUCH_VAR")
    );
    let KeyUri::Pkcs11(u) =
        KeyUri::parse("pkcs11:token=t?pin-source=file:/nonexistent/pin").unwrap()
    else {
        panic!()
    };
    assert!(
        u.pin()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/pin")
    );
}

#[test]
fn pkcs11_errors_name_the_part() {
    assert!(err("pkcs11:slot-id=3;object=a").contains("slot-id"));
    assert!(err("pkcs11:token=a;token=b").contains("'token' is repeated"));
    assert!(err("pkcs11:tokn=a").contains("'tokn'"));
    assert!(err("pkcs11:token=a?modul-path=/x").contains("'modul-path'"));
    assert!(err("pkcs11:token=a;type=weird").contains("'weird'"));
    assert!(err("pkcs11:token=a%g1").contains("percent-encoding"));
    assert!(err("pkcs11:token").contains("no '='"));
    assert!(err("pkcs11:token=a?max-sessions=0").contains("max-sessions"));
    assert!(err("pkcs11:token=a?pin-source=ftp://x").contains("pin-source"));
    assert!(err("pkcs11:token=a?pin-value=1&pin-source=env:X").contains("both"));
    // Vendor attributes are accepted and ignored.
    assert!(KeyUri::parse("pkcs11:token=a;x-vendor=1?x-other=2").is_ok());
}

#[test]
fn awskms_forms() {
    let u = KeyUri::parse("awskms:alias/keyward-ca").unwrap();
    let KeyUri::AwsKms(k) = &u else { panic!() };
    assert_eq!(k.key, KmsKeyRef::Alias("alias/keyward-ca".into()));
    assert_eq!(k.key_id(), "alias/keyward-ca");
    assert_eq!(u.to_string(), "awskms:alias/keyward-ca");
    let u = KeyUri::parse("awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab?region=eu-west-1")
        .unwrap();
    assert_eq!(
        u.to_string(),
        "awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab?region=eu-west-1"
    );
    let arn = "awskms:arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert_eq!(KeyUri::parse(arn).unwrap().to_string(), arn);
    let u = KeyUri::parse("awskms:alias/x?endpoint=http%3A%2F%2F127.0.0.1%3A5000").unwrap();
    let KeyUri::AwsKms(k) = &u else { panic!() };
    assert_eq!(k.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(KeyUri::parse(&u.to_string()).unwrap(), u);
}

#[test]
fn awskms_errors_name_the_part() {
    assert!(err("awskms:").contains("must be alias/NAME"));
    assert!(err("awskms:alias/").contains("awskms alias is empty"));
    assert!(err("awskms:alias/a b").contains("' '"));
    assert!(err("awskms:alias/aws/ebs").contains("reserved"));
    assert!(err("awskms:arn:aws:s3:::bucket").contains("ARN"));
    assert!(err("awskms:alias/x?colour=red").contains("'colour'"));
    assert!(err("awskms:key-id=").contains("key-id is empty"));
}

#[test]
fn transit_forms() {
    let u = KeyUri::parse("transit:keyward-ca").unwrap();
    let KeyUri::Transit(t) = &u else { panic!() };
    assert_eq!(
        (t.name.as_str(), t.mount.as_str(), t.version),
        ("keyward-ca", "transit", None)
    );
    assert_eq!(u.to_string(), "transit:keyward-ca");
    let u = KeyUri::parse("transit:keyward-ca?mount=transit2&version=3").unwrap();
    let KeyUri::Transit(t) = &u else { panic!() };
    assert_eq!((t.mount.as_str(), t.version), ("transit2", Some(3)));
    assert_eq!(u.to_string(), "transit:keyward-ca?mount=transit2&version=3");
}

#[test]
fn transit_errors_name_the_part() {
    assert!(err("transit:").contains("transit key name is empty"));
    assert!(err("transit:a/b").contains("'/'"));
    assert!(err("transit:a?version=0").contains("version '0'"));
    assert!(err("transit:a?version=x").contains("version 'x'"));
    assert!(err("transit:a?mount=t&mount=u").contains("repeated"));
    assert!(err("transit:a?namespace=x").contains("'namespace'"));
}
