//! `[audit] path`: one JSON object per line for every SVID issued and every caller
//! served or refused. Never holds key material.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use keyward_core::Error;
use serde_json::{Value, json};

/// The audit log; a no-op when not configured. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    file: Option<Arc<Mutex<File>>>,
}

impl Audit {
    /// Opens (appending, mode 0600) the log at `path`, or a no-op log for `None`.
    pub fn open(path: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Audit::default());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            keyward_core::fsutil::create_private_dir(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open the audit log {}", path.display()), e))?;
        Ok(Audit {
            file: Some(Arc::new(Mutex::new(file))),
        })
    }

    /// Appends one event: `{"time": ..., "event": EVENT, ...fields()}`. The fields are
    /// only built when the log is configured.
    pub fn record(&self, event: &str, fields: impl FnOnce() -> Value) {
        let Some(file) = &self.file else { return };
        let fields = fields();
        let mut obj = json!({
            "time": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "event": event,
        });
        if let (Some(o), Value::Object(extra)) = (obj.as_object_mut(), fields) {
            o.extend(extra);
        }
        let mut line = obj.to_string();
        line.push('\n');
        if let Ok(mut f) = file.lock()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}
