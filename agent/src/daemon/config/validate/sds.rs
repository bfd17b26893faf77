//! `[sds]`: the names Envoy's SDS serves the default SVID and the bundles under.

use keyward_core::Error;
use toml::Spanned;

use super::super::SdsSettings;
use super::super::raw::RawSds;
use super::Src;

/// The `[sds]` settings; an absent section (or key) gives SPIRE's defaults.
pub(super) fn settings(src: &Src, raw: Option<&Spanned<RawSds>>) -> Result<SdsSettings, Error> {
    let defaults = SdsSettings::default();
    let Some(section) = raw else {
        return Ok(defaults);
    };
    let r = section.get_ref();
    let name = |v: &Option<Spanned<String>>, default: String| -> Result<String, Error> {
        let Some(v) = v else { return Ok(default) };
        let text = v.get_ref();
        if text.is_empty() || text.trim() != text {
            return Err(src.err(
                &v.span(),
                "an SDS resource name must be non-empty, without surrounding spaces",
            ));
        }
        if text.starts_with("spiffe://") {
            return Err(src.err(
                &v.span(),
                "an SDS resource name must not start with spiffe:// (SPIFFE IDs and trust domains name their own resources)",
            ));
        }
        Ok(text.clone())
    };
    let settings = SdsSettings {
        default_svid_name: name(&r.default_svid_name, defaults.default_svid_name)?,
        default_bundle_name: name(&r.default_bundle_name, defaults.default_bundle_name)?,
        default_all_bundles_name: name(
            &r.default_all_bundles_name,
            defaults.default_all_bundles_name,
        )?,
        disable_spiffe_cert_validation: r.disable_spiffe_cert_validation.unwrap_or(false),
    };
    let names = [
        &settings.default_svid_name,
        &settings.default_bundle_name,
        &settings.default_all_bundles_name,
    ];
    if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
        return Err(src.err(
            &section.span(),
            "default_svid_name, default_bundle_name and default_all_bundles_name must differ",
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::Config;
    use super::*;

    const BASE: &str = "[agent]\nsocket = \"/run/a.sock\"\nstate_dir = \"/var/lib/k\"\ntrust_domain = \"example.org\"\n[ca]\nkey = \"file:/k/ca.pem\"\n";

    fn parse(sds: &str) -> Result<SdsSettings, Error> {
        Config::parse(&format!("{BASE}{sds}"), "agent.toml", Path::new("/etc")).map(|c| c.sds)
    }

    #[test]
    fn spires_names_are_the_defaults_and_each_can_be_set() {
        assert_eq!(parse("").unwrap(), SdsSettings::default());
        assert_eq!(parse("[sds]\n").unwrap(), SdsSettings::default());
        let set = parse(
            "[sds]\ndefault_svid_name = \"svid\"\ndefault_bundle_name = \"null\"\n\
             default_all_bundles_name = \"ROOTCA\"\ndisable_spiffe_cert_validation = true\n",
        )
        .unwrap();
        assert_eq!(
            set,
            SdsSettings {
                default_svid_name: "svid".into(),
                default_bundle_name: "null".into(),
                default_all_bundles_name: "ROOTCA".into(),
                disable_spiffe_cert_validation: true,
            }
        );
    }

    #[test]
    fn empty_clashing_spiffe_or_unknown_names_are_refused_with_their_position() {
        for (sds, says) in [
            ("default_svid_name = \"\"", "non-empty"),
            (
                "default_bundle_name = \"spiffe://example.org\"",
                "spiffe://",
            ),
            ("default_all_bundles_name = \"default\"", "must differ"),
            ("default_name = \"x\"", "unknown field"),
        ] {
            let e = parse(&format!("[sds]\n{sds}\n")).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("agent.toml:"), "{sds}: {e}");
        }
    }
}
