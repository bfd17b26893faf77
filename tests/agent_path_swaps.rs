//! End-to-end: a program named by a `path` selector is replaced (renamed over, its
//! directory moved away and another put in its place, covered by a mount, its name
//! removed), while a process of uid 65534 still runs the old file on a connection that
//! was served before. The agent keeps its lookups of entries' paths between calls
//! (`attest::path_lookups`); each change here must reach the very next call: the old
//! program is refused at once, with no wait, and a process running the new file is
//! served. One change also comes after more directory events than inotify queues.

mod agent_common;
mod common;
mod relay_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_common::*;
use relay_common::{Relay, perl_as, perl_copy};
use tonic::Code;

/// How the program at the entry's path is replaced.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// A new file renamed over the name.
    RenamedOver,
    /// The program's directory's parent moved away, a new one made in its place.
    DirectoryReplaced,
    /// A new file bind-mounted over the name.
    MountedOver,
    /// More events than the inotify queue holds in the program's directory, then a new
    /// file renamed over the name (its event lost to the overflow).
    RenamedOverAfterAFullQueue,
    /// The name removed: no file at the path.
    Removed,
}

/// Unmounts its path when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Makes `change` to the program at `prog`; `spare` is another copy, made before
/// (making it now would be an event in a directory of the path).
fn make(change: Change, prog: &Path, spare: &Path) -> Option<Mounted> {
    let next = prog.with_extension("next");
    match change {
        Change::RenamedOver => {
            perl_copy(&next);
            std::fs::rename(&next, prog).expect("rename over");
        }
        Change::DirectoryReplaced => {
            let app = prog.parent().unwrap().parent().unwrap();
            std::fs::rename(app, app.with_extension("old")).expect("move the directory");
            perl_copy(prog);
        }
        Change::MountedOver => {
            let ok = Command::new("mount")
                .arg("--bind")
                .arg(spare)
                .arg(prog)
                .status()
                .expect("run mount");
            assert!(ok.success(), "mount --bind (needs root)");
            return Some(Mounted(prog.to_path_buf()));
        }
        Change::RenamedOverAfterAFullQueue => {
            let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
                .expect("inotify's queue size")
                .trim()
                .parse()
                .unwrap();
            perl_copy(&next);
            let dir = prog.parent().unwrap();
            for i in 0..max + 16 {
                std::fs::File::create(dir.join(format!("event-{i}"))).expect("create");
            }
            std::fs::rename(&next, prog).expect("rename over");
        }
        Change::Removed => std::fs::remove_file(prog).expect("remove"),
    }
    None
}

/// A call that must be refused as matching no entry, with no SVID.
async fn refused(relay: &Relay, what: &str) {
    match raw::fetch_x509(relay.channel.clone(), true).await {
        Err(s) => {
            assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}");
            assert!(s.message().contains("no workload entry"), "{what}: {s:?}");
        }
        Ok(m) => panic!("{what}: {} SVID(s) served", m.svids.len()),
    }
}

/// The SPIFFE IDs served through `relay`.
async fn served(relay: &Relay, what: &str) -> Vec<String> {
    let m = raw::fetch_x509(relay.channel.clone(), true)
        .await
        .unwrap_or_else(|e| panic!("{what} is not served: {e:?}"));
    m.svids.into_iter().map(|s| s.spiffe_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_program_is_refused_from_the_next_call_on() {
    let changes = [
        Change::RenamedOver,
        Change::DirectoryReplaced,
        Change::MountedOver,
        Change::RenamedOverAfterAFullQueue,
        Change::Removed,
    ];
    let mut agent = Agent::new(&entry("legit", 0, "1h", ""));
    let mut entries = entry("legit", 0, "1h", "");
    for (i, _) in changes.iter().enumerate() {
        let prog = agent.dir.path().join(format!("{i}/app/bin/api-server"));
        perl_copy(&prog);
        perl_copy(&agent.dir.path().join(format!("{i}/spare/api-server")));
        entries.push_str(&format!(
            "[[workload]]\nspiffe_id = \"spiffe://{TRUST_DOMAIN}/api-{i}\"\nttl = \"1h\"\nselectors = {{ uid = {NOBODY}, path = \"{}\" }}\n",
            prog.display()
        ));
    }
    agent.write_config(&entries);
    agent.start();
    for (i, change) in changes.into_iter().enumerate() {
        let prog = agent.dir.path().join(format!("{i}/app/bin/api-server"));
        let spare = agent.dir.path().join(format!("{i}/spare/api-server"));
        let want = vec![format!("spiffe://{TRUST_DOMAIN}/api-{i}")];
        let old = relay_common::start(perl_as(NOBODY, &prog, &agent.socket, &["stay"])).await;
        for _ in 0..3 {
            assert_eq!(served(&old, "the program before the change").await, want);
        }
        let _mounted = make(change, &prog, &spare);
        refused(&old, &format!("the old program after {change:?}")).await;
        if matches!(change, Change::Removed) {
            continue;
        }
        let new = relay_common::start(perl_as(NOBODY, &prog, &agent.socket, &["stay"])).await;
        assert_eq!(
            served(&new, &format!("the new program after {change:?}")).await,
            want
        );
        refused(&old, &format!("the old program after {change:?}, again")).await;
    }
    let root = raw::fetch_x509(raw::channel(&agent.socket).await, true)
        .await
        .expect("root is served");
    assert_eq!(root.svids.len(), 1);
    agent.stop();
}
