//! What an audit record says: an event name and its fields, with constructors for the
//! events keyward records, so every writer names things the same way.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Algorithm, KeyUri};

/// One event to append: a name and its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event name, e.g. `certificate_issued`.
    pub name: String,
    /// The event's details (never secrets).
    pub fields: Map<String, Value>,
}

/// Who asked for an operation: the invoking process for the CLI, the attested peer of a
/// socket connection for the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Process id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// The executable's path, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

impl Caller {
    /// This process (the CLI's invoker): uid and gid from `/proc/self`, pid and executable.
    pub fn this_process() -> Caller {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata("/proc/self").ok();
        Caller {
            uid: meta.as_ref().map_or(u32::MAX, MetadataExt::uid),
            gid: meta.as_ref().map(MetadataExt::gid),
            pid: Some(i64::from(std::process::id())),
            exe: std::env::current_exe()
                .ok()
                .map(|p| p.display().to_string()),
        }
    }

    /// A peer process: the executable is read from `/proc/PID/exe` when not given.
    pub fn peer(uid: u32, gid: u32, pid: i64, exe: Option<&std::path::Path>) -> Caller {
        let exe = exe
            .map(std::path::Path::to_path_buf)
            .or_else(|| std::fs::read_link(format!("/proc/{pid}/exe")).ok());
        Caller {
            uid,
            gid: Some(gid),
            pid: Some(pid),
            exe: exe.map(|p| p.display().to_string()),
        }
    }
}

impl Event {
    /// An event with no fields yet.
    pub fn new(name: impl Into<String>) -> Event {
        Event {
            name: name.into(),
            fields: Map::new(),
        }
    }

    /// Adds (or replaces) a field. A key URI must be passed as `uri.to_string()` (its
    /// `Display` omits `pin-value`) or through [`Event::key`].
    pub fn with(mut self, key: &str, value: impl Serialize) -> Event {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        self.fields.insert(key.to_string(), v);
        self
    }

    /// Adds a key URI field (its `Display` form, which never holds a PIN).
    pub fn key(self, field: &str, uri: &KeyUri) -> Event {
        self.with(field, uri.to_string())
    }

    /// Adds the caller as the `caller` field.
    pub fn caller(self, caller: &Caller) -> Event {
        self.with("caller", caller)
    }

    /// A key was generated (`keyward key generate`, a CA key made by the agent).
    pub fn key_generated(uri: &KeyUri, alg: Algorithm, public_key_sha256: &str) -> Event {
        Event::new("key_generated")
            .key("key", uri)
            .with("algorithm", alg.name())
            .with("public_key_sha256", public_key_sha256)
    }

    /// A certificate was issued: `name` is the event (`certificate_issued`,
    /// `ca_root_created`, `svid_issued`, ...); the fields come from the certificate
    /// itself (serial, subject, SANs, issuer, validity) and the signing key's URI.
    pub fn issued(name: &str, cert_der: &[u8], signing_key: &KeyUri) -> Event {
        let mut e = Event::new(name);
        match crate::check::summarize(cert_der) {
            Ok(s) => {
                e = e
                    .with("serial", s.serial_hex)
                    .with("subject", s.subject)
                    .with("sans", s.sans)
                    .with("issuer", s.issuer)
                    .with("not_before", rfc3339(s.not_before))
                    .with("not_after", rfc3339(s.not_after));
            }
            Err(err) => e = e.with("certificate_error", err.to_string()),
        }
        e.key("signing_key", signing_key)
    }

    /// The agent refused a caller: why, and who.
    pub fn denied(reason: &str, caller: &Caller) -> Event {
        Event::new("denied").with("reason", reason).caller(caller)
    }

    /// A certificate was revoked (serial as upper-case hex, the reason as given).
    pub fn revoked(serial_hex: &str, reason: &str, caller: &Caller) -> Event {
        Event::new("revoked")
            .with("serial", serial_hex)
            .with("reason", reason)
            .caller(caller)
    }

    /// The agent reloaded its configuration (SIGHUP): from where, and whether the new
    /// configuration was applied (with the reason when it was not).
    pub fn config_reloaded(source: &str, applied: bool, detail: Option<&str>) -> Event {
        let e = Event::new("config_reloaded")
            .with("config", source)
            .with("applied", applied);
        match detail {
            Some(d) => e.with("detail", d),
            None => e,
        }
    }
}

/// RFC 3339 text of a time (UTC as `Z`).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
