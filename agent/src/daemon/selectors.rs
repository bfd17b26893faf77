//! Workload selectors: which callers an entry is for. An entry matches a caller when
//! every selector it sets matches (uid, gid, executable path, executable SHA-256).

use std::path::PathBuf;

use super::attest::Facts;

/// The selectors of one workload entry; unset ones match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// The caller's user id.
    pub uid: Option<u32>,
    /// The caller's group id.
    pub gid: Option<u32>,
    /// The caller's executable, as /proc/PID/exe names it.
    pub path: Option<PathBuf>,
    /// Lower-case hex SHA-256 of the caller's executable.
    pub sha256: Option<String>,
}

/// What attestation must find out about a caller for a set of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some entry has a `path` selector.
    pub path: bool,
    /// Some entry has a `sha256` selector.
    pub sha256: bool,
}

impl Selectors {
    /// Whether no selector is set (such an entry is refused by the config check).
    pub fn is_empty(&self) -> bool {
        self.uid.is_none() && self.gid.is_none() && self.path.is_none() && self.sha256.is_none()
    }

    /// Whether every set selector matches the attested caller. A fact attestation
    /// could not establish (e.g. an unreadable executable) never matches.
    pub fn matches(&self, facts: &Facts) -> bool {
        self.uid.is_none_or(|u| u == facts.uid)
            && self.gid.is_none_or(|g| g == facts.gid)
            && self
                .path
                .as_ref()
                .is_none_or(|p| facts.path.as_ref() == Some(p))
            && self
                .sha256
                .as_ref()
                .is_none_or(|h| facts.sha256.as_ref() == Some(h))
    }

    /// Adds what these selectors need to `needs`.
    pub fn add_needs(&self, needs: &mut Needs) {
        needs.path |= self.path.is_some();
        needs.sha256 |= self.sha256.is_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            uid: 1000,
            gid: 100,
            pid: 42,
            start_time: Some(7),
            path: Some("/usr/bin/api".into()),
            sha256: None,
        }
    }

    #[test]
    fn every_set_selector_must_match() {
        let f = facts();
        let uid = Selectors {
            uid: Some(1000),
            ..Default::default()
        };
        assert!(uid.matches(&f));
        let both = Selectors {
            uid: Some(1000),
            path: Some("/usr/bin/api".into()),
            ..Default::default()
        };
        assert!(both.matches(&f));
        let wrong_path = Selectors {
            uid: Some(1000),
            path: Some("/usr/bin/other".into()),
            ..Default::default()
        };
        assert!(!wrong_path.matches(&f));
        let wrong_gid = Selectors {
            gid: Some(0),
            ..Default::default()
        };
        assert!(!wrong_gid.matches(&f));
    }

    #[test]
    fn an_unknown_fact_never_matches() {
        let f = facts();
        let hash = Selectors {
            sha256: Some("00".repeat(32)),
            ..Default::default()
        };
        assert!(!hash.matches(&f));
    }
}
