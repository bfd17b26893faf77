//! The command line: the contract (README.md's walkthrough and its tests) that users rely on.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keyward: a local key and certificate agent.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, propagate_version = true)]
pub struct Cli {
    /// The state directory (CA, inventory).
    #[arg(
        long,
        global = true,
        env = "KEYWARD_STATE_DIR",
        default_value = "keyward-state"
    )]
    pub state_dir: PathBuf,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// keyward's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate or inspect keys in any backend.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create the CA: a root, or an intermediate under it.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue a service certificate with a new key, written to a directory.
    Issue(IssueArgs),
    /// Sign a certificate signing request (devices keep their own keys).
    SignCsr(SignCsrArgs),
    /// Check a certificate against the CA: chain, validity, constraints, signatures.
    Verify(VerifyArgs),
    /// List the CA and every issued certificate with days left and alert level.
    Status(StatusArgs),
    /// Revoke an issued certificate and re-sign the CRL.
    Revoke(RevokeArgs),
    /// Re-sign the CRL (run before its nextUpdate, e.g. from cron) and print where it is.
    Crl(CrlArgs),
    /// Inspect PKCS#11 modules and tokens.
    #[command(subcommand)]
    Hsm(HsmCommand),
    /// Start the agent with embedded defaults: a software CA in the state directory and one
    /// workload entry for the current user; prints the commands that fetch and check its
    /// certificate.
    Up,
    /// Run the agent: serve the SPIFFE Workload API on a Unix socket, rotate credentials.
    Agent {
        /// The agent's TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Fetch X.509 credentials from a running agent and write them to a directory.
    Fetch(FetchArgs),
    /// Sign, encrypt or decrypt through a running agent with a key it grants the caller
    /// (keyward.v1.KeyService); the key never leaves the agent's backend.
    #[command(subcommand)]
    Crypto(CryptoCommand),
    /// Write the state directory and its software CA keys into one encrypted archive.
    #[command(
        long_about = "Write everything needed to rebuild the state directory into ONE archive \
    encrypted under a passphrase (Argon2id + ChaCha20-Poly1305): CA certificates and manifest, \
    inventory and issued certificates, pending records, every other file in the directory \
    (audit logs, agent records), and the private keys of the software (file:) CA keys, even \
    when they live outside the directory. HSM, KMS and Vault keys are recorded by URI only, \
    never exported. The state is read under its lock; the archive is written with mode 0600 \
    and never over an existing file."
    )]
    Backup(BackupArgs),
    /// Rebuild a state directory (--state-dir) from a backup archive.
    #[command(
        long_about = "Rebuild the state directory given by --state-dir (which must not exist or \
    be empty) from a backup archive. Everything is decrypted and checked before anything is \
    written; the directory is built beside the target and renamed into place. Software CA keys \
    that lived outside the state directory go back to their recorded path, so key URIs and agent \
    configurations stay valid: an identical file already there is kept, a different one is never \
    overwritten (restore refuses and writes nothing). Keys that lived inside the state directory \
    come back inside it, with their URIs rewritten to the new path. Every key must be a PKCS#8 \
    key whose public key is that of the archived CA certificate naming it. Key files to be \
    written outside the state directory are listed on stderr, and written only with \
    --allow-outside-state. HSM, KMS and Vault keys are not in the archive and must still exist \
    in their backend."
    )]
    Restore(RestoreArgs),
    /// Check the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Enrollment over EST (RFC 7030): devices' bootstrap secrets.
    #[command(subcommand)]
    Est(EstCommand),
    /// Print issued credentials for another system (a Kubernetes TLS Secret).
    Export(ExportArgs),
    /// List operations a crash left unfinished; `pending resolve` settles them.
    #[command(
        long_about = "List the operations a crash (or kill) left unfinished in STATE/pending/: \
    what, when, and what they were changing. `keyward pending resolve` settles each in its own \
    transaction with an audit record: an issuance whose key or certificate was delivered is \
    finished (its files completed and recorded), one that delivered nothing is recorded as \
    abandoned (its serial is never used again); CA files no manifest names are removed; a \
    CRL older than the revocation list is re-signed."
    )]
    Pending {
        /// `resolve` settles them; without it they are listed.
        #[command(subcommand)]
        command: Option<PendingCommand>,
    },
}

/// `keyward pending ...`
#[derive(Debug, Subcommand)]
pub enum PendingCommand {
    /// Finish or undo every unfinished operation, one transaction each.
    Resolve {
        /// How long a CRL re-signed to finish a `revoke` or `crl` is valid, e.g. 7d.
        #[arg(long, default_value = "7d")]
        next_update: String,
    },
}

/// `keyward backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The archive to create (refused if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Read the passphrase from this file (first line) instead of asking twice on the terminal.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// `keyward restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive written by `keyward backup`.
    pub archive: PathBuf,
    /// Read the passphrase from this file (first line) instead of asking on the terminal.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Write the CA keys that lived outside the state directory back to their recorded
    /// paths (listed on stderr first); without it such a restore is refused.
    #[arg(long)]
    pub allow_outside_state: bool,
}

/// `keyward est ...`
#[derive(Debug, Subcommand)]
pub enum EstCommand {
    /// One-use secrets for devices' first EST enrollment (HTTP Basic).
    #[command(subcommand)]
    Bootstrap(EstBootstrapCommand),
}

/// `keyward est bootstrap ...`
#[derive(Debug, Subcommand)]
pub enum EstBootstrapCommand {
    /// Make a device's bootstrap secret: printed once, only its hash is stored (in
    /// STATE/est/bootstrap/). It enrolls once, a CSR whose common name is NAME and whose
    /// SANs are among --dns/--ip.
    Add {
        /// The device's name: the HTTP Basic user and its CSR's common name.
        #[arg(long)]
        name: String,
        /// A DNS name the device's CSR may ask for (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// An IP address the device's CSR may ask for (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
    },
}

/// `keyward audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of audit log files, given oldest first
    /// (e.g. audit.jsonl.2 audit.jsonl.1 audit.jsonl); names the first bad line.
    Verify {
        /// The log files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Set aside a log that cannot be continued (head file lost, end cut or damaged)
    /// and start a new chain.
    #[command(
        long_about = "Set aside an audit log whose chain cannot be continued (its head file \
    was lost, or its end was cut or damaged) and start a new chain. Refused when the log can \
    be continued. Under the log's lock, the old chain is verified as far as it goes, then the \
    log, its rotated files and its head file move (never deleted) into LOG.unverified-TIME/ \
    beside it, and the new log's first record, audit_chain_restarted, names that directory, \
    the reason, the verify result and the old log's last line."
    )]
    Recover {
        /// The live log (default: STATE/audit.jsonl; the agent's is the path in its
        /// `[audit]` table).
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

/// `keyward export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The name given to `keyward issue --name` (its most recent certificate is exported).
    #[arg(long)]
    pub name: String,
    /// Output format: k8s-secret (a kubernetes.io/tls Secret, YAML).
    #[arg(long)]
    pub format: String,
    /// The Secret's namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The Secret's name (default: NAME made DNS-1123 compliant).
    #[arg(long)]
    pub secret_name: Option<String>,
}

/// `keyward crypto ...`
#[derive(Debug, Subcommand)]
pub enum CryptoCommand {
    /// Sign the input with a signing key; writes the signature (X.509 encoding).
    Sign {
        /// The key, the socket and the files.
        #[command(flatten)]
        args: CryptoArgs,
        /// Refuse unless the key's algorithm is this one (e.g. ecdsa-p256).
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// Write a signing key's public key (PEM SubjectPublicKeyInfo).
    PublicKey {
        /// The key, the socket and the files.
        #[command(flatten)]
        args: CryptoArgs,
    },
    /// Make a 256-bit data key: the plaintext key goes to --out (0600) or stdout, the
    /// wrapped key to --wrapped-out.
    DataKey {
        /// The key, the socket and the files.
        #[command(flatten)]
        args: CryptoArgs,
        /// Where to write the wrapped data key (a new file).
        #[arg(long)]
        wrapped_out: PathBuf,
    },
    /// Encrypt the input (at most 4096 bytes) under a key-encryption key.
    Encrypt {
        /// The key, the socket and the files.
        #[command(flatten)]
        args: CryptoArgs,
        /// Associated data the ciphertext is bound to (needed again to decrypt).
        #[arg(long)]
        aad: Option<String>,
    },
    /// Decrypt what `encrypt` wrote, or with --data-key a wrapped data key.
    Decrypt {
        /// The key, the socket and the files.
        #[command(flatten)]
        args: CryptoArgs,
        /// The associated data given to `encrypt`.
        #[arg(long)]
        aad: Option<String>,
        /// The input is a wrapped data key from `data-key`; writes the plaintext key.
        #[arg(long)]
        data_key: bool,
    },
    /// Get an X.509-SVID for a key you keep: send a CSR (PEM or DER, its URI SAN your
    /// SPIFFE ID); writes the SVID and its intermediates as PEM.
    SvidFromCsr {
        /// The agent's socket: unix:///path, unix:/path or /path (default:
        /// SPIFFE_ENDPOINT_SOCKET, in the same forms).
        #[arg(long)]
        socket: Option<String>,
        /// The CSR file (default or `-`: stdin).
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// The SVID chain, PEM (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the trust bundle, PEM (a new file).
        #[arg(long)]
        bundle_out: Option<PathBuf>,
    },
}

/// What every `keyward crypto` subcommand takes.
#[derive(Debug, Args)]
pub struct CryptoArgs {
    /// The agent's socket: unix:///path, unix:/path or /path (default:
    /// SPIFFE_ENDPOINT_SOCKET, in the same forms).
    #[arg(long)]
    pub socket: Option<String>,
    /// The grant name of the key (from the caller's `[[workload]] keys`).
    #[arg(long)]
    pub key: String,
    /// The input file (default or `-`: stdin).
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// The output file, created 0600 (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `keyward fetch`
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The agent's socket: unix:///path, unix:/path or /path (default:
    /// SPIFFE_ENDPOINT_SOCKET, in the same forms).
    #[arg(long)]
    pub socket: Option<String>,
    /// Output directory: each SVID goes into a new directory that OUT/current is
    /// switched to in one step; OUT/cert.pem, key.pem (0600) and bundle.pem link
    /// through it.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep running, reconnect when the agent goes away, and write every rotation.
    #[arg(long)]
    pub watch: bool,
    /// A shell command to run after each write (e.g. reload nginx), with
    /// KEYWARD_SVID_DIR set to the new SVID directory.
    #[arg(long)]
    pub exec: Option<String>,
}

/// `keyward key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a new key; never overwrites an existing one.
    Generate {
        /// Key URI (file:, pkcs11:, awskms:, transit:).
        #[arg(long)]
        key: String,
        /// ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096 (rsa-pss-N for PSS),
        /// or aes-256 for a key-encryption key (file: makes a directory of versions).
        #[arg(long)]
        algorithm: String,
    },
    /// Add a version to a key-encryption key; it encrypts from then on, and data under
    /// earlier versions still decrypts.
    Rotate {
        /// Key URI of a key-encryption key (file:, awskms:, transit:).
        #[arg(long)]
        key: String,
    },
    /// Show a key's algorithm and public key.
    Show {
        /// Key URI.
        #[arg(long)]
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `keyward ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a self-signed root CA with an existing key.
    Init {
        /// The root key's URI.
        #[arg(long)]
        key: String,
        /// Subject, e.g. "CN=Example Root CA,O=Example".
        #[arg(long, default_value = "CN=keyward root CA")]
        subject: String,
        /// Validity, e.g. 10y.
        #[arg(long, default_value = "10y")]
        validity: String,
    },
    /// Create the issuing intermediate CA, signed by the root (or by an upstream authority).
    Intermediate {
        /// The intermediate key's URI.
        #[arg(long)]
        key: String,
        /// Subject, e.g. "CN=Example Issuing CA".
        #[arg(long, default_value = "CN=keyward intermediate CA")]
        subject: String,
        /// Validity, e.g. 1y.
        #[arg(long, default_value = "1y")]
        validity: String,
        /// An upstream authority that signs the intermediate: vault-pki:MOUNT[?role=ROLE].
        #[arg(long)]
        upstream: Option<String>,
    },
}

/// `keyward issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Name (the certificate's common name).
    #[arg(long)]
    pub name: String,
    /// DNS subject alternative name (repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP subject alternative name (repeatable).
    #[arg(long)]
    pub ip: Vec<IpAddr>,
    /// URI subject alternative name, e.g. spiffe://example.org/api (repeatable).
    #[arg(long)]
    pub uri: Vec<String>,
    /// Validity, e.g. 90d.
    #[arg(long, default_value = "90d")]
    pub validity: String,
    /// The new key's algorithm.
    #[arg(long, default_value = "ecdsa-p256")]
    pub algorithm: String,
    /// Output directory: cert.pem, key.pem (0600), chain.pem, ca.pem.
    #[arg(long)]
    pub out: PathBuf,
}

/// `keyward sign-csr`
#[derive(Debug, Args)]
pub struct SignCsrArgs {
    /// The CSR (PEM or DER).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub csr: Option<PathBuf>,
    /// Sign every CSR (PEM or DER) in this directory: `--out` is then a directory that
    /// gets NAME.pem per CSR file NAME.EXT (or JSON Lines bundles, `--output-format`)
    /// and manifest.json (its parts in manifest.d/ while the run goes on), which a
    /// second run reads to sign only what is missing.
    #[arg(long, value_name = "DIR")]
    pub batch: Option<PathBuf>,
    /// Validity, e.g. 90d.
    #[arg(long, default_value = "90d")]
    pub validity: String,
    /// Output file: the certificate followed by the intermediates (PEM); with
    /// `--batch`, the output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// With `--batch`: how the certificates are written to `--out`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Pem)]
    pub output_format: OutputFormat,
}

/// How `sign-csr --batch` writes the certificates it signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// NAME.pem per CSR file NAME.EXT: the chain (certificate, then intermediates).
    Pem,
    /// certificates-NNNNNN.jsonl per recorded chunk (up to 1,000 certificates), one JSON
    /// line per certificate: csr, csr_sha256, serial, subject, not_after, chain_pem.
    Jsonl,
}

/// `keyward verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Certificate file (PEM; further certificates in it are used as intermediates).
    #[arg(long)]
    pub cert: PathBuf,
    /// Trust bundle (PEM) to use instead of the state directory's CA.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A CRL (PEM or DER) to check the chain against, besides the state directory's
    /// own and upstream CRLs (repeatable). It must verify under the CA it names; one
    /// past its nextUpdate is used, with a warning.
    #[arg(long = "crl", value_name = "FILE")]
    pub crls: Vec<PathBuf>,
}

/// `keyward status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// WARNING when this long or less is left (whole days, e.g. 30d).
    #[arg(long, default_value = "30d")]
    pub warning: String,
    /// ERROR when this long or less is left (whole days, e.g. 7d).
    #[arg(long, default_value = "7d")]
    pub error: String,
}

/// `keyward revoke`
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Serial number of the certificate, hex as `keyward status` prints it.
    #[arg(long)]
    pub serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, caCompromise, affiliationChanged,
    /// superseded, cessationOfOperation, privilegeWithdrawn (kebab-case accepted).
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
    /// How long the new CRL is valid (its nextUpdate), e.g. 7d.
    #[arg(long, default_value = "7d")]
    pub next_update: String,
}

/// `keyward crl`
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// How long the new CRL is valid (its nextUpdate), e.g. 7d.
    #[arg(long, default_value = "7d")]
    pub next_update: String,
}

/// `keyward hsm ...`
#[derive(Debug, Subcommand)]
pub enum HsmCommand {
    /// List the module's slots and their tokens.
    Slots {
        /// Path of the PKCS#11 module.
        #[arg(long)]
        module: PathBuf,
        /// Also list each token's mechanisms.
        #[arg(long)]
        mechanisms: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the key objects on a token.
    Keys {
        /// pkcs11: URI naming the token (module-path and pin-source included).
        #[arg(long)]
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
