use super::*;
use rcgen::{DnType, DnValue};

fn value(dn: &DistinguishedName, ty: DnType) -> String {
    match dn.get(&ty) {
        Some(DnValue::Utf8String(s)) => s.clone(),
        Some(DnValue::PrintableString(s)) => s.as_str().to_owned(),
        other => panic!("unexpected value {other:?}"),
    }
}

fn err(r: Result<impl std::fmt::Debug, Error>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn subject_with_all_attributes_keeps_order() {
    let dn = parse_subject("CN=Example Root CA, O=Example, OU=Ops, C=nl, L=Delft, ST=Zuid-Holland")
        .unwrap();
    let order: Vec<_> = dn.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(
        order,
        vec![
            DnType::CommonName,
            DnType::OrganizationName,
            DnType::OrganizationalUnitName,
            DnType::CountryName,
            DnType::LocalityName,
            DnType::StateOrProvinceName
        ]
    );
    assert_eq!(value(&dn, DnType::CommonName), "Example Root CA");
    assert_eq!(value(&dn, DnType::CountryName), "NL");
    assert!(matches!(
        dn.get(&DnType::CountryName),
        Some(DnValue::PrintableString(_))
    ));
}

#[test]
fn bare_name_is_a_common_name() {
    let dn = parse_subject("api.internal").unwrap();
    assert_eq!(value(&dn, DnType::CommonName), "api.internal");
    assert_eq!(dn.iter().count(), 1);
}

#[test]
fn escaped_comma_stays_in_the_value_and_keys_are_case_insensitive() {
    let dn = parse_subject(r"cn=Acme\, Inc. Root,o=Acme").unwrap();
    assert_eq!(value(&dn, DnType::CommonName), "Acme, Inc. Root");
    assert_eq!(value(&dn, DnType::OrganizationName), "Acme");
}

#[test]
fn bad_subjects_get_clear_errors() {
    assert!(err(parse_subject("  ")).contains("empty subject"));
    assert!(err(parse_subject("CN=x,FOO=y")).contains("unknown attribute 'FOO'"));
    assert!(err(parse_subject("CN=")).contains("empty value for CN"));
    assert!(err(parse_subject("CN=a,,O=b")).contains("empty component"));
    assert!(err(parse_subject("CN=a,CN=b")).contains("CN appears twice"));
    assert!(err(parse_subject("CN=a,C=NLD")).contains("two-letter country code"));
    assert!(err(parse_subject("CN=a,O")).contains("has no '='"));
    assert!(err(parse_subject(&format!("CN={}", "x".repeat(65)))).contains("at most 64"));
    assert!(err(parse_subject("CN=a\u{7}b")).contains("control character"));
    assert!(err(parse_subject(r"CN=a\")).contains("lone backslash"));
}

#[test]
fn dns_names() {
    for ok in [
        "localhost",
        "api.internal",
        "a-b.example.com",
        "*.example.com",
        "xn--bcher-kva.example",
    ] {
        check_dns_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let cases = [
        ("", "empty DNS name"),
        ("bad_name.example", "character '_'"),
        ("-a.example", "hyphen"),
        ("a..example", "empty label"),
        ("example.com.", "trailing dot"),
        ("10.0.0.1", "IP address"),
        ("a.*.example", "leftmost"),
        ("*.com", "two labels"),
        ("bücher.example", "punycode"),
        ("host.123", "all digits"),
    ];
    for (name, want) in cases {
        let e = err(check_dns_name(name));
        assert!(e.contains(want), "{name}: {e}");
    }
    let long = format!("{}.example", "a".repeat(64));
    assert!(err(check_dns_name(&long)).contains("63"));
}

#[test]
fn uris_must_be_absolute() {
    for ok in [
        "https://example.org/x?y=1",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "spiffe://example.org/ns/prod/sa/api",
    ] {
        check_uri(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let cases = [
        ("", "empty URI"),
        ("example.org/api", "not an absolute URI"),
        ("/api", "not an absolute URI"),
        ("1http://x", "scheme"),
        ("https://exa mple.org", "not allowed"),
        ("https://example.org/%zz", "two hex digits"),
        ("mailto:", "nothing after the scheme"),
    ];
    for (uri, want) in cases {
        let e = err(check_uri(uri));
        assert!(e.contains(want), "{uri}: {e}");
    }
}

#[test]
fn spiffe_ids_need_trust_domain_and_path() {
    let cases = [
        ("spiffe://example.org", "needs a path"),
        ("spiffe://example.org/", "needs a path"),
        ("spiffe:///api", "empty trust domain"),
        ("spiffe://Example.org/api", "trust domain"),
        ("spiffe://example.org:443/api", "port"),
        ("spiffe://user@example.org/api", "user info"),
        ("spiffe://example.org/api/", "trailing slash"),
        ("spiffe://example.org//api", "empty path segment"),
        ("spiffe://example.org/a/../b", "'..'"),
        ("spiffe://example.org/api?x=1", "query"),
        ("SPIFFE://example.org/api", "lower-case scheme"),
        ("spiffe://example.org/a:b", "not allowed in the path"),
    ];
    for (id, want) in cases {
        let e = err(check_uri(id));
        assert!(e.contains(want), "{id}: {e}");
    }
}
