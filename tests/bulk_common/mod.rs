//! What the bulk provisioning tests (`bulk_sign.rs`) share: CSR directories made with
//! rcgen, the `sign-csr --batch` command, and the checks that the manifest, the output
//! (chain files or JSON Lines bundles), the inventory and the audit log agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{keyward_bin, openssl};
use rcgen::{CertificateParams, KeyPair};

/// The CSR files that are not CSRs, and why.
pub const MALFORMED: [&str; 3] = ["dev-0017.csr", "dev-0999.csr", "dev-1500.csr"];

/// Writes `n` CSR files `dev-NNNN.csr` into `dir` (every fifth one DER, the rest PEM),
/// where the [`MALFORMED`] ones are: text that is no CSR, a truncated DER CSR, and a
/// CSR whose signature was altered. Returns the names of the good ones.
pub fn make_csrs(dir: &Path, n: usize) -> BTreeSet<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut good = BTreeSet::new();
    for i in 0..n {
        let name = format!("dev-{i:04}.csr");
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec![format!("dev-{i:04}.devices.internal")])
            .expect("CSR parameters");
        let csr = params.serialize_request(&key).expect("CSR");
        let der = csr.der().to_vec();
        let content = match MALFORMED.iter().position(|m| *m == name) {
            Some(0) => b"this is not a certificate signing request\n".to_vec(),
            Some(1) => der[..der.len() / 2].to_vec(),
            Some(_) => {
                let mut bad = der;
                let last = bad.len() - 3;
                bad[last] ^= 0x55;
                bad
            }
            None if i % 5 == 0 => {
                good.insert(name.clone());
                der
            }
            None => {
                good.insert(name.clone());
                csr.pem().expect("PEM").into_bytes()
            }
        };
        std::fs::write(dir.join(&name), content).unwrap();
    }
    good
}

/// How `sign-csr --batch` writes its certificates, and how a test checks them.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// The default: NAME.pem per CSR (no `--output-format` given).
    Pem,
    /// `--output-format jsonl`: one JSON Lines bundle per recorded chunk.
    Jsonl,
}

impl Format {
    /// The arguments that choose it.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Format::Pem => &[],
            Format::Jsonl => &["--output-format", "jsonl"],
        }
    }

    /// [`assert_consistent`] or [`assert_bundles_consistent`].
    pub fn assert_consistent(self, state: &Path, out: &Path) -> BTreeMap<String, String> {
        match self {
            Format::Pem => assert_consistent(state, out),
            Format::Jsonl => assert_bundles_consistent(state, out),
        }
    }

    /// A PEM file with the chain delivered for the CSR file `csr` (written to `scratch`
    /// for a bundle).
    pub fn chain_of(self, out: &Path, csr: &str, scratch: &Path) -> PathBuf {
        match self {
            Format::Pem => out.join(csr.replace(".csr", ".pem")),
            Format::Jsonl => chain_from_bundle(out, csr, scratch),
        }
    }
}

/// `keyward --state-dir STATE sign-csr --batch CSRS --out OUT` in `format`, started.
pub fn batch(state: &Path, csrs: &Path, out: &Path, format: Format) -> Command {
    let mut cmd = Command::new(keyward_bin());
    cmd.arg("--state-dir")
        .arg(state)
        .args(["sign-csr", "--batch"])
        .arg(csrs)
        .arg("--out")
        .arg(out)
        .args(format.args())
        .env_remove("KEYWARD_LOG");
    cmd
}

/// Runs the batch in `format` to the end; it succeeds and its summary says `summary`.
pub fn run_succeeds_with(state: &Path, csrs: &Path, out: &Path, format: Format, summary: &str) {
    let run = batch(state, csrs, out, format).output().unwrap();
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(summary), "{stdout}");
}

/// The manifest as a run reads it: CSR file name → (status, serial if signed, reason if
/// refused), from `manifest.json` and the parts a run not yet ended left in
/// `manifest.d/`, read over it in order.
pub fn manifest(out: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut files = vec![out.join("manifest.json")];
    let mut parts: Vec<PathBuf> = std::fs::read_dir(out.join("manifest.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    parts.retain(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
    });
    parts.sort();
    files.extend(parts);
    let mut entries = BTreeMap::new();
    for file in files {
        let text = std::fs::read(&file).unwrap_or_default();
        if text.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&text).expect("manifest is JSON");
        let csrs: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(v["csrs"].clone()).expect("manifest csrs");
        entries.extend(csrs);
    }
    entries
}

/// The manifest of a run that ended (also on SIGINT): `manifest.json` alone, its parts
/// folded in and removed.
pub fn ended_manifest(out: &Path) -> BTreeMap<String, serde_json::Value> {
    for left in ["manifest.d", ".manifest.d.done"] {
        assert!(!out.join(left).exists(), "{left} left after the run's end");
    }
    manifest(out)
}

/// CSR file names the manifest lists as signed, with their serials.
pub fn signed_in(manifest: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    manifest
        .iter()
        .filter(|(_, e)| e["status"] == "signed")
        .map(|(n, e)| (n.clone(), e["serial"].as_str().unwrap().to_string()))
        .collect()
}

/// Serials of the certificates the inventory holds, with their `out` paths.
pub fn inventory(state: &Path) -> Vec<(String, PathBuf)> {
    crate::inventory_common::records(state)
        .iter()
        .filter(|r| r["kind"] == "csr" && r.get("status").is_none())
        .map(|r| {
            (
                r["serial_hex"].as_str().unwrap().to_string(),
                PathBuf::from(r["out"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Serials named by the `certificates_issued` records of the audit log.
pub fn audited_serials(state: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "certificates_issued")
        .flat_map(|r| {
            r["fields"]["certificates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["serial"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks that the manifest, the inventory and the audit log agree: every CSR the
/// manifest lists as signed has a record and an audit entry, each once, and nothing
/// else was signed. Returns the manifest's signed CSRs (name → serial) and the
/// inventory's (serial, out) pairs.
fn assert_records_agree(
    state: &Path,
    out: &Path,
) -> (BTreeMap<String, String>, Vec<(String, PathBuf)>) {
    let signed = signed_in(&ended_manifest(out));
    let inventory = inventory(state);
    let audited = audited_serials(state);
    let manifest_serials: BTreeSet<&String> = signed.values().collect();
    let inventory_serials: BTreeSet<&String> = inventory.iter().map(|(s, _)| s).collect();
    assert_eq!(
        inventory.len(),
        inventory_serials.len(),
        "a serial twice in the inventory"
    );
    assert_eq!(
        audited.len(),
        audited.iter().collect::<BTreeSet<_>>().len(),
        "a serial audited twice"
    );
    assert_eq!(
        manifest_serials, inventory_serials,
        "manifest and inventory differ"
    );
    assert_eq!(
        manifest_serials,
        audited.iter().collect(),
        "manifest and audit log differ"
    );
    (signed, inventory)
}

/// [`assert_records_agree`], and with `--output-format pem` every signed CSR has its
/// own chain file in OUT, the `out` of its record. Returns the signed CSRs.
pub fn assert_consistent(state: &Path, out: &Path) -> BTreeMap<String, String> {
    let (signed, inventory) = assert_records_agree(state, out);
    let outs: BTreeSet<&PathBuf> = inventory.iter().map(|(_, o)| o).collect();
    assert_eq!(
        outs.len(),
        inventory.len(),
        "two certificates delivered to one file"
    );
    for name in signed.keys() {
        let cert = out.join(name.replace(".csr", ".pem"));
        assert!(
            outs.contains(&cert),
            "{} is not in the inventory",
            cert.display()
        );
        assert!(cert.is_file(), "{} is missing", cert.display());
    }
    signed
}

/// The lines of OUT's JSON Lines bundles, with each bundle's file name.
pub fn bundle_lines(out: &Path) -> Vec<(String, serde_json::Value)> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !(name.starts_with("certificates-") && name.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(out.join(&name)).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a bundle line is JSON");
            lines.push((name.clone(), v));
        }
    }
    lines
}

/// [`assert_records_agree`] and [`assert_bundles_match`]. Returns the signed CSRs.
pub fn assert_bundles_consistent(state: &Path, out: &Path) -> BTreeMap<String, String> {
    let (signed, inventory) = assert_records_agree(state, out);
    assert_bundles_match(out, &signed, &inventory);
    signed
}

/// With `--output-format jsonl`: every CSR in `signed` (name → serial) is one line of
/// the bundle its manifest entry names, the `out` of its record in `inventory`, with
/// its serial and the CSR file's hash; the bundles hold nothing else.
pub fn assert_bundles_match(
    out: &Path,
    signed: &BTreeMap<String, String>,
    inventory: &[(String, PathBuf)],
) {
    let entries = manifest(out);
    let outs: BTreeMap<&String, &PathBuf> = inventory.iter().map(|(s, o)| (s, o)).collect();
    let lines = bundle_lines(out);
    assert_eq!(
        lines.len(),
        signed.len(),
        "bundle lines besides the signed CSRs"
    );
    for (bundle, line) in &lines {
        let csr = line["csr"].as_str().unwrap();
        let serial = line["serial"].as_str().unwrap();
        assert_eq!(
            signed.get(csr).map(String::as_str),
            Some(serial),
            "{bundle}: {csr}"
        );
        assert_eq!(entries[csr]["cert"], bundle.as_str(), "{csr}'s bundle");
        assert_eq!(
            entries[csr]["csr_sha256"], line["csr_sha256"],
            "{csr}'s hash"
        );
        assert_eq!(
            outs[&serial.to_string()],
            &out.join(bundle),
            "{serial}'s out"
        );
        assert!(
            line["subject"].as_str().unwrap().starts_with("CN="),
            "{line}"
        );
        assert!(line["not_after"].is_string(), "{line}");
    }
}

/// Writes the chain of `csr`'s bundle line to DIR/NAME.pem and returns that path.
pub fn chain_from_bundle(out: &Path, csr: &str, dir: &Path) -> PathBuf {
    let (_, line) = bundle_lines(out)
        .into_iter()
        .find(|(_, l)| l["csr"] == csr)
        .unwrap_or_else(|| panic!("{csr} is in no bundle"));
    let path = dir.join(csr.replace(".csr", ".pem"));
    std::fs::write(&path, line["chain_pem"].as_str().unwrap()).unwrap();
    path
}

/// `openssl verify -x509_strict` of the chain file `cert` under the state's root, and
/// its public key is the one of the CSR `csr`.
pub fn assert_verifies_for(state: &Path, cert: &Path, csr: &Path) {
    let root = state.join("ca/root.pem");
    let verified = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        root.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(verified.contains(": OK"), "{verified}");
    let form = if std::fs::read(csr).unwrap().starts_with(b"-----") {
        "PEM"
    } else {
        "DER"
    };
    let csr_key = openssl(&[
        "req",
        "-in",
        csr.to_str().unwrap(),
        "-inform",
        form,
        "-noout",
        "-pubkey",
    ]);
    let cert_key = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert_eq!(
        csr_key,
        cert_key,
        "{} does not carry the key of {}",
        cert.display(),
        csr.display()
    );
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary names each of the `malformed` CSRs with a reason, and only them.
pub fn assert_refusals_named(stdout: &str, malformed: &[&str]) {
    let refused: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  refused "))
        .collect();
    assert_eq!(refused.len(), malformed.len(), "{stdout}");
    for name in malformed {
        let line = refused
            .iter()
            .find(|l| l.starts_with(&format!("  refused {name}: ")))
            .unwrap_or_else(|| panic!("{name} is not named in the summary:\n{stdout}"));
        assert!(line.contains("CSR"), "no reason for {name}: {line}");
    }
}
