//! Where each generation of the JWT signing key lives in its backend.
//!
//! The configured URI names the first key. Every later generation appends
//! `-<unix time it starts signing>` to the key's name: the file stem
//! (`jwt.pem` → `jwt-1767225600.pem`), the PKCS#11 `object=` label, the KMS alias
//! (`alias/jwt` → `alias/jwt-1767225600`) or the Transit key name. Everything else in
//! the URI (token, module, PIN source, region, mount) stays as configured, so the URI
//! of a generation is recomputed from the configuration and never written to disk.

use keyward_core::KeyUri;
use keyward_core::uri::KmsKeyRef;

/// Checks that later generations can be named from `base`; the error says what to change.
pub fn check_base(base: &KeyUri) -> Result<(), String> {
    match base {
        KeyUri::File(f) => {
            if f.path.file_stem().is_none_or(|s| s.is_empty()) {
                return Err(format!(
                    "the JWT key file {} has no file name",
                    f.path.display()
                ));
            }
        }
        KeyUri::Pkcs11(p) => {
            if p.object.is_none() {
                return Err(
                    "the JWT key needs object= (later keys are named object=<label>-<unix time>)"
                        .into(),
                );
            }
            if p.id.is_some() {
                return Err("the JWT key is named by object= alone: drop id= (each generation is a new object)".into());
            }
        }
        KeyUri::AwsKms(k) => {
            if !matches!(k.key, KmsKeyRef::Alias(_)) {
                return Err("the JWT key in AWS KMS must be an alias (awskms:alias/NAME): later keys get the alias NAME-<unix time>".into());
            }
        }
        KeyUri::Transit(t) => {
            if t.version.is_some() {
                return Err("the JWT key in Transit must not pin version= (each generation is a new Transit key)".into());
            }
        }
        other => {
            return Err(format!(
                "{}: keys cannot be generated there",
                other.scheme()
            ));
        }
    }
    Ok(())
}

/// The URI of the generation that starts signing at `unix_secs`.
pub fn generation_uri(base: &KeyUri, unix_secs: u64) -> KeyUri {
    let suffix = format!("-{unix_secs}");
    let mut uri = base.clone();
    match &mut uri {
        KeyUri::File(f) => {
            let stem = f.path.file_stem().unwrap_or_default().to_string_lossy();
            let name = match f.path.extension() {
                Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
                None => format!("{stem}{suffix}"),
            };
            f.path.set_file_name(name);
        }
        KeyUri::Pkcs11(p) => {
            if let Some(o) = &mut p.object {
                o.push_str(&suffix);
            }
        }
        KeyUri::AwsKms(k) => {
            if let KmsKeyRef::Alias(a) = &mut k.key {
                a.push_str(&suffix);
            }
        }
        KeyUri::Transit(t) => t.name.push_str(&suffix),
        _ => {}
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(base: &str) -> String {
        let base = KeyUri::parse(base).unwrap();
        check_base(&base).unwrap();
        generation_uri(&base, 1_767_225_600).to_string()
    }

    #[test]
    fn each_backend_appends_the_time_to_the_name() {
        assert_eq!(named("file:/k/jwt.pem"), "file:/k/jwt-1767225600.pem");
        assert_eq!(named("file:/k/jwt"), "file:/k/jwt-1767225600");
        assert!(named("pkcs11:token=t;object=jwt?pin-value=1").contains("object=jwt-1767225600"));
        assert_eq!(named("awskms:alias/jwt"), "awskms:alias/jwt-1767225600");
        assert!(named("transit:jwt?mount=t2").starts_with("transit:jwt-1767225600"));
    }

    #[test]
    fn names_that_cannot_grow_are_refused() {
        for bad in [
            "pkcs11:token=t;id=%01",
            "pkcs11:token=t;object=jwt;id=%01",
            "awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab",
            "transit:jwt?version=2",
        ] {
            assert!(check_base(&KeyUri::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }
}
