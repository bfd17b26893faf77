//! The `svid_served` records. A workload that fetches its SVIDs a thousand times a
//! second would otherwise cost a thousand audit records a second (profiled at 32
//! clients: building, hashing and writing them took a fifth of the agent's CPU). The
//! first service of a set of SVIDs to a process is recorded at once, as before; the
//! same SVIDs served again to the same process within the next second are counted, and
//! that count is recorded once, in a record naming the same caller and serials with
//! `"repeats": N`, at the end of that second (or at shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyward_core::audit::Event;

use super::Audit;
use crate::daemon::attest::{Facts, FileKey};
use crate::daemon::caller::audit_caller;
use crate::daemon::streams::Sent;
use crate::daemon::svid::Svid;

/// How long repeats are counted before their record is written.
const WINDOW: Duration = Duration::from_secs(1);

/// Repeated services counted in the current window.
#[derive(Debug, Default)]
pub(super) struct Served {
    repeats: Mutex<HashMap<Service, Repeats>>,
}

/// One service: which process (uid, gid, pid and executable) was sent which SVIDs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Service {
    uid: u32,
    gid: u32,
    pid: i32,
    exe: Option<FileKey>,
    /// The SVIDs sent, by address: `Repeats::svids` keeps them alive, so no other
    /// SVID takes an address while it is a key here.
    svids: Vec<usize>,
}

/// The repeats of one service in the current window.
#[derive(Debug)]
struct Repeats {
    /// The record of the first service, to which the count is added.
    first: Event,
    /// The SVIDs served (kept alive, see [`Service::svids`]).
    _svids: Vec<Arc<Svid>>,
    count: u64,
}

impl Audit {
    /// Records that `set` was sent to the caller `facts` describe (see the module
    /// comment for how repeats are counted).
    pub fn served(&self, facts: &Facts, set: &Sent) {
        let Some(queue) = &self.queue else { return };
        let service = Service {
            uid: facts.uid,
            gid: facts.gid,
            pid: facts.pid,
            exe: facts.exe.as_ref().map(|e| e.file),
            svids: set.iter().map(|(_, s)| Arc::as_ptr(s) as usize).collect(),
        };
        let mut repeats = self.lock_served();
        if let Some(r) = repeats.get_mut(&service) {
            r.count += 1;
            return;
        }
        let first = served_event(facts, set);
        if repeats.is_empty() {
            // The window starts: its repeats are written when it ends.
            let audit = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(WINDOW).await;
                audit.write_repeats();
            });
        }
        repeats.insert(
            service,
            Repeats {
                first: first.clone(),
                _svids: set.iter().map(|(_, s)| s.clone()).collect(),
                count: 0,
            },
        );
        drop(repeats);
        super::enqueue(queue, first);
    }

    /// Writes the counts of the current window and starts a new one.
    pub(super) fn write_repeats(&self) {
        let Some(queue) = &self.queue else { return };
        let ended = std::mem::take(&mut *self.lock_served());
        for r in ended.into_values().filter(|r| r.count > 0) {
            super::enqueue(queue, r.first.with("repeats", r.count));
        }
    }

    fn lock_served(&self) -> std::sync::MutexGuard<'_, HashMap<Service, Repeats>> {
        self.served
            .repeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The record of `set` sent to `facts`' process.
fn served_event(facts: &Facts, set: &Sent) -> Event {
    Event::new("svid_served")
        .with(
            "spiffe_ids",
            set.iter()
                .map(|(e, _)| e.spiffe_id.as_str())
                .collect::<Vec<_>>(),
        )
        .with(
            "serials",
            set.iter()
                .map(|(_, s)| s.serial_hex.as_str())
                .collect::<Vec<_>>(),
        )
        .caller(&audit_caller(facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::{AuditSettings, WorkloadEntry};
    use crate::daemon::selectors::Selectors;
    use keyward_core::Algorithm;
    use prost::bytes::Bytes;
    use time::OffsetDateTime;

    fn sent(serial: &str) -> Sent {
        let entry = Arc::new(WorkloadEntry {
            spiffe_id: "spiffe://example.org/api".into(),
            dns: Vec::new(),
            ips: Vec::new(),
            ttl: Duration::from_secs(3600),
            algorithm: Algorithm::EcdsaP256Sha256,
            hint: String::new(),
            selectors: Selectors::default(),
            keys: Vec::new(),
        });
        let svid = Arc::new(Svid {
            chain: Bytes::from_static(b"chain"),
            leaf: Bytes::from_static(b"chain"),
            key: Bytes::from_static(b"key"),
            serial_hex: serial.into(),
            not_after: OffsetDateTime::UNIX_EPOCH,
        });
        vec![(entry, svid)]
    }

    fn facts(pid: i32) -> Facts {
        Facts {
            uid: 1000,
            gid: 1000,
            pid,
            exe: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeats_are_counted_in_one_record_and_new_services_recorded_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&AuditSettings {
            path: path.clone(),
            max_bytes: 1 << 30,
            keep: 1,
        })
        .unwrap();
        let (a, b) = (sent("0A"), sent("0B"));
        for _ in 0..5 {
            audit.served(&facts(7), &a);
        }
        audit.served(&facts(8), &a);
        audit.served(&facts(7), &b);
        audit.flush();
        let served: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["event"] == "svid_served")
            .collect();
        let shown: Vec<_> = served
            .iter()
            .map(|r| {
                let f = &r["fields"];
                (
                    f["caller"]["pid"].as_i64().unwrap(),
                    f["serials"][0].as_str().unwrap().to_string(),
                    f["repeats"].as_u64(),
                )
            })
            .collect();
        assert_eq!(shown.len(), 4, "{served:?}");
        assert_eq!(
            shown[..3],
            [
                (7, "0A".into(), None),
                (8, "0A".into(), None),
                (7, "0B".into(), None)
            ],
            "each new service is recorded at once, in order"
        );
        assert_eq!(
            shown[3],
            (7, "0A".into(), Some(4)),
            "then the repeats' count"
        );
    }
}
