//! Workload selectors: which callers an entry is for. An entry matches a caller when
//! every selector it sets matches (uid, gid, executable file, executable SHA-256).

use std::path::PathBuf;

use super::attest::{Facts, Needs, file_named};

/// The selectors of one workload entry; unset ones match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// The caller's user id.
    pub uid: Option<u32>,
    /// The caller's group id.
    pub gid: Option<u32>,
    /// The caller's executable: the file this path names in the agent's own mount
    /// namespace (compared by device and inode, never by name).
    pub path: Option<PathBuf>,
    /// Lower-case hex SHA-256 of the caller's executable.
    pub sha256: Option<String>,
    /// Set when an entry with `path` or `sha256` deliberately names no uid or gid
    /// (`allow_any_user = true`): any user running the program gets the identity.
    pub allow_any_user: bool,
}

impl Selectors {
    /// Whether no selector is set (such an entry is refused by the config check).
    pub fn is_empty(&self) -> bool {
        !self.names_a_user() && !self.names_a_program()
    }

    /// Whether the entry names a program (`path` or `sha256`).
    pub fn names_a_program(&self) -> bool {
        self.path.is_some() || self.sha256.is_some()
    }

    /// Whether the entry names a user (`uid` or `gid`).
    pub fn names_a_user(&self) -> bool {
        self.uid.is_some() || self.gid.is_some()
    }

    /// Whether every set selector matches the attested caller. A fact attestation
    /// could not establish (e.g. an unreadable executable) never matches. A `path` names
    /// the file it names now (`attest::file_named`), so a replaced program is the one
    /// that matches.
    pub fn matches(&self, facts: &Facts) -> bool {
        let exe = facts.exe.as_ref();
        self.uid.is_none_or(|u| u == facts.uid)
            && self.gid.is_none_or(|g| g == facts.gid)
            && self
                .sha256
                .as_ref()
                .is_none_or(|h| exe.and_then(|e| e.sha256.as_ref()) == Some(h))
            && self
                .path
                .as_ref()
                .is_none_or(|p| exe.is_some_and(|e| file_named(p) == Some(e.file)))
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
    use crate::daemon::attest::{Exe, FileKey};

    /// A caller of uid 1000 running this test binary.
    fn facts() -> Facts {
        let me = std::env::current_exe().unwrap();
        Facts {
            uid: 1000,
            gid: 100,
            pid: 42,
            exe: Some(Exe {
                file: FileKey::at(&me).unwrap(),
                shown_as: Some(me),
                sha256: None,
            }),
        }
    }

    #[test]
    fn every_set_selector_must_match() {
        let f = facts();
        let me = std::env::current_exe().unwrap();
        let uid = Selectors {
            uid: Some(1000),
            ..Default::default()
        };
        assert!(uid.matches(&f));
        let both = Selectors {
            uid: Some(1000),
            path: Some(me.clone()),
            ..Default::default()
        };
        assert!(both.matches(&f));
        let wrong_path = Selectors {
            uid: Some(1000),
            path: Some("/nonexistent/api".into()),
            ..Default::default()
        };
        assert!(!wrong_path.matches(&f));
        let wrong_gid = Selectors {
            gid: Some(0),
            ..Default::default()
        };
        assert!(!wrong_gid.matches(&f));
        let unread = Facts { exe: None, ..f };
        assert!(
            !both.matches(&unread),
            "an executable not read never matches"
        );
    }

    #[test]
    fn a_path_matches_by_file_not_by_name() {
        let f = facts();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("same-bytes");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let by_copy = Selectors {
            uid: Some(1000),
            path: Some(copy),
            ..Default::default()
        };
        assert!(!by_copy.matches(&f), "a copy is another file");
        let mut by_name = f.clone();
        if let Some(e) = by_name.exe.as_mut() {
            e.shown_as = Some("/nonexistent/api".into());
        }
        let named = Selectors {
            uid: Some(1000),
            path: Some("/nonexistent/api".into()),
            ..Default::default()
        };
        assert!(
            !named.matches(&by_name),
            "the name /proc shows is not compared"
        );
    }

    #[test]
    fn an_unknown_fact_never_matches() {
        let f = facts();
        let hash = Selectors {
            uid: Some(1000),
            sha256: Some("00".repeat(32)),
            ..Default::default()
        };
        assert!(!hash.matches(&f));
    }
}
