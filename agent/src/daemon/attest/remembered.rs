//! A connection's attestation, kept for its later calls (h2 streams on one connection
//! share it), and what tells whether it still holds: the kernel's process events for
//! the caller (`proc_events`: no exec, uid or gid event since), or, where the kernel
//! does not send them or the facts include a digest, a fingerprint taken in two stat
//! calls: the owner of the caller's `/proc/PID` directory (its effective uid and gid)
//! and the version of the file its `/proc/PID/exe` names. See the `attest` module for
//! what each can and cannot see.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags, open, statx};

use super::digest::FileVersion;
use super::proc_events::{Stamp, Watch};
use super::{AttestError, Facts, Needs, Peer};

/// The caller's `/proc/PID` directory, held open (`O_PATH`): it stays bound to the
/// process it was opened for, whatever process holds the PID later.
#[derive(Debug)]
pub(super) struct ProcDir(OwnedFd);

impl ProcDir {
    /// Opens `/proc/PID`.
    pub(super) fn open(pid: i32) -> Result<ProcDir, String> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        open(format!("/proc/{pid}"), flags, Mode::empty())
            .map(ProcDir)
            .map_err(|e| format!("cannot open /proc/{pid}: {e}"))
    }

    /// The process's fingerprint now.
    pub(super) fn fingerprint(&self) -> rustix::io::Result<Fingerprint> {
        let dir = statx(
            &self.0,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::UID | StatxFlags::GID,
        )?;
        let exe = statx(&self.0, "exe", AtFlags::empty(), StatxFlags::BASIC_STATS)?;
        Ok(Fingerprint {
            owner: (dir.stx_uid, dir.stx_gid),
            exe: FileVersion::of_statx(&exe),
        })
    }
}

/// What two stat calls tell about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    /// The owner of `/proc/PID`: the effective uid and gid of the process (procfs
    /// reports them for the directory even when the process is not dumpable).
    pub(super) owner: (u32, u32),
    /// The file `/proc/PID/exe` names.
    pub(super) exe: FileVersion,
}

/// An attestation of a connection's caller and what tells whether it still holds.
#[derive(Debug)]
pub(super) struct Attested {
    /// How a later call checks that the facts still hold.
    pub(super) check: Check,
    /// What was established.
    pub(super) facts: Facts,
    /// What was asked for.
    pub(super) needs: Needs,
}

/// How a remembered attestation is checked before its facts are reused.
#[derive(Debug)]
pub(super) enum Check {
    /// No exec, uid or gid event for the process since the stamp, from before the reads.
    Events(Watch, Stamp),
    /// The caller's `/proc/PID` and its fingerprint when the facts were read.
    Fingerprint(ProcDir, Fingerprint),
}

impl Check {
    /// Whether the process is unchanged since the check was taken: no event for it
    /// since, or the same fingerprint now.
    fn holds(&self) -> bool {
        match self {
            Check::Events(watch, stamp) => watch.stamp() == *stamp,
            Check::Fingerprint(dir, print) => dir.fingerprint().ok() == Some(*print),
        }
    }

    /// Whether the check, taken before reads that found `read`, vouches for them: no
    /// event for the process since, or a fingerprint that shows what was read.
    pub(super) fn holds_for(&self, read: &Fingerprint) -> bool {
        match self {
            Check::Events(..) => self.holds(),
            Check::Fingerprint(_, print) => print == read,
        }
    }
}

impl Attested {
    /// The facts again, if they cover `needs`, the process has not changed since and it
    /// still runs (through `peer`'s pidfd: so the fingerprint read was that process's);
    /// an error once it has exited. With process events both are asked in one `poll`.
    pub(super) fn reuse(&self, needs: Needs, peer: &Peer) -> Result<Option<Facts>, AttestError> {
        let covered = (self.needs.path || !needs.path) && (self.needs.sha256 || !needs.sha256);
        if !covered {
            return Ok(None);
        }
        let unchanged = match &self.check {
            Check::Events(watch, stamp) => {
                let (now, exited) = watch.stamp_and_exit(peer.pidfd()?);
                if exited {
                    // Named as a check of its own would name it (a failed poll that
                    // does not recur reads everything again instead).
                    peer.check_alive()?;
                    return Ok(None);
                }
                now == *stamp
            }
            Check::Fingerprint(..) => {
                if !self.check.holds() {
                    return Ok(None);
                }
                peer.check_alive()?;
                true
            }
        };
        Ok(unchanged.then(|| self.facts.clone()))
    }
}

/// The last attestation of a connection's caller that later calls may reuse.
#[derive(Debug, Default)]
pub struct Remembered(Mutex<Option<Arc<Attested>>>);

impl Remembered {
    /// The attestation remembered, if any.
    pub(super) fn get(&self) -> Option<Arc<Attested>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers `attested` (or forgets, with `None`).
    pub(super) fn set(&self, attested: Option<Attested>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = attested.map(Arc::new);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PATH, SHA256, me};
    use super::super::{AttestError, DigestCache, Peer, attest};
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    /// The remembered attestation with its facts marked (the executable shown as
    /// `/marked`) and its fingerprint changed by `edit`.
    fn mark(peer: &Peer, edit: impl FnOnce(&mut Fingerprint)) {
        let last = peer.remembered.get().expect("remembered");
        let mut facts = last.facts.clone();
        facts.exe.as_mut().unwrap().shown_as = Some(PathBuf::from("/marked"));
        let Check::Fingerprint(_, mut print) = last.check else {
            panic!("remembered by fingerprint")
        };
        edit(&mut print);
        let dir = ProcDir::open(std::process::id() as i32).unwrap();
        peer.remembered.set(Some(Attested {
            check: Check::Fingerprint(dir, print),
            facts,
            needs: last.needs,
        }));
    }

    /// The version of a file that is not this process's executable.
    fn other_file() -> FileVersion {
        FileVersion::of(&std::fs::metadata("/proc/self/status").unwrap())
    }

    fn shown_as(f: &Facts) -> Option<PathBuf> {
        f.exe.as_ref().unwrap().shown_as.clone()
    }

    #[test]
    fn the_fingerprint_is_the_effective_ids_and_the_executable() {
        let dir = ProcDir::open(std::process::id() as i32).unwrap();
        let print = dir.fingerprint().unwrap();
        let meta = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(print.owner, (meta.uid(), meta.gid()));
        let exe = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(print.exe, FileVersion::of(&exe));
        assert_ne!(print.exe, other_file());
    }

    #[tokio::test]
    async fn an_unchanged_fingerprint_reuses_the_facts_and_a_changed_one_reads_again() {
        let (peer, _keep) = me();
        let digests = DigestCache::default();
        let first = attest(&peer, PATH, &digests, None).await.unwrap();
        mark(&peer, |_| {});
        let again = attest(&peer, PATH, &digests, None).await.unwrap();
        assert_eq!(shown_as(&again), Some(PathBuf::from("/marked")), "reused");

        mark(&peer, |p| p.owner.0 = p.owner.0.wrapping_add(1));
        let read = attest(&peer, PATH, &digests, None).await.unwrap();
        assert_eq!(read, first, "another effective uid: read again");
        mark(&peer, |p| p.exe = other_file());
        let read = attest(&peer, PATH, &digests, None).await.unwrap();
        assert_eq!(read, first, "another executable: read again");
        assert_eq!(
            peer.remembered.get().unwrap().facts,
            first,
            "remembered again"
        );
    }

    #[tokio::test]
    async fn needs_that_grow_are_read_and_then_remembered() {
        let (peer, _keep) = me();
        let digests = DigestCache::default();
        let path = attest(&peer, PATH, &digests, None).await.unwrap();
        assert_eq!(path.exe.as_ref().unwrap().sha256, None);
        mark(&peer, |_| {});
        let both = attest(&peer, SHA256, &digests, None).await.unwrap();
        assert!(both.exe.as_ref().unwrap().sha256.is_some(), "hashed");
        assert_ne!(
            shown_as(&both),
            Some(PathBuf::from("/marked")),
            "read again"
        );
        mark(&peer, |_| {});
        let again = attest(&peer, PATH, &digests, None).await.unwrap();
        assert_eq!(shown_as(&again), Some(PathBuf::from("/marked")), "covered");
        assert!(again.exe.unwrap().sha256.is_some());
    }

    #[tokio::test]
    async fn with_process_events_the_facts_are_reused_until_an_event_for_the_caller() {
        let events = super::super::ProcEvents::open().expect("process events (run as root)");
        let (peer, _keep) = me();
        let digests = DigestCache::default();
        let first = attest(&peer, PATH, &digests, Some(&events)).await.unwrap();
        let last = peer.remembered.get().expect("remembered");
        let Check::Events(watch, stamp) = &last.check else {
            panic!("remembered by process events: {:?}", last.check)
        };
        assert_eq!(watch.stamp(), *stamp);
        // The remembered facts marked, under a watch of its own from now.
        let marked = |peer: &Peer| {
            let last = peer.remembered.get().unwrap();
            let mut facts = last.facts.clone();
            facts.exe.as_mut().unwrap().shown_as = Some(PathBuf::from("/marked"));
            let (watch, stamp) = events.watch(std::process::id() as i32);
            peer.remembered.set(Some(Attested {
                check: Check::Events(watch, stamp),
                facts,
                needs: last.needs,
            }));
        };
        marked(&peer);
        let again = attest(&peer, PATH, &digests, Some(&events)).await.unwrap();
        assert_eq!(shown_as(&again), Some(PathBuf::from("/marked")), "reused");
        events.note_event_for(std::process::id() as i32);
        let read = attest(&peer, PATH, &digests, Some(&events)).await.unwrap();
        assert_eq!(read, first, "an event for the caller: read again");
        let hashed = attest(&peer, SHA256, &digests, Some(&events))
            .await
            .unwrap();
        assert!(hashed.exe.unwrap().sha256.is_some());
        assert!(
            matches!(peer.remembered.get().unwrap().check, Check::Fingerprint(..)),
            "a digest is checked by fingerprint"
        );
    }

    #[tokio::test]
    async fn a_process_that_has_exited_gets_nothing_remembered() {
        let (peer, _keep) = me();
        attest(&peer, PATH, &DigestCache::default(), None)
            .await
            .unwrap();
        let gone = Peer::unknown("the process that connected has exited");
        gone.remembered.set(peer.remembered.get().map(|a| Attested {
            check: match &a.check {
                Check::Fingerprint(_, print) => {
                    Check::Fingerprint(ProcDir::open(std::process::id() as i32).unwrap(), *print)
                }
                Check::Events(..) => panic!("remembered by fingerprint"),
            },
            facts: a.facts.clone(),
            needs: a.needs,
        }));
        let e = attest(&gone, PATH, &DigestCache::default(), None)
            .await
            .unwrap_err();
        assert!(matches!(e, AttestError::Gone(_)), "{e}");
    }
}
