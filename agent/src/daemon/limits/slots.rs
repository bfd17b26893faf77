//! The connection slots of the socket: at most `max_connections` connections open at
//! once, and at most `max_connections_per_uid` of them from any one uid, so one local
//! user cannot take every slot and keep the others out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::daemon::config::CallerLimits;

/// The slots shared by every accepted connection.
#[derive(Debug)]
pub struct ConnectionSlots {
    total: Arc<Semaphore>,
    per_uid: usize,
    by_uid: Arc<Mutex<HashMap<u32, usize>>>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Its uid already holds `max_connections_per_uid` connections.
    UidFull,
    /// `max_connections` connections are open.
    AllFull,
}

impl NoSlot {
    /// The reason the refusal is counted under in the metrics.
    pub fn metric_reason(self) -> &'static str {
        match self {
            NoSlot::UidFull => "too_many_connections_uid",
            NoSlot::AllFull => "too_many_connections",
        }
    }
}

/// One connection's slot, in the total and in its uid's share, until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    _total: OwnedSemaphorePermit,
    _uid: UidShare,
}

/// One connection counted against its uid until dropped.
#[derive(Debug)]
struct UidShare {
    uid: u32,
    by_uid: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Drop for UidShare {
    fn drop(&mut self) {
        let mut map = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

impl ConnectionSlots {
    /// The slots `limits` allow.
    pub fn new(limits: &CallerLimits) -> Self {
        ConnectionSlots {
            total: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            per_uid: limits.max_connections_per_uid,
            by_uid: Arc::default(),
        }
    }

    /// A slot for a connection from `uid`, if its uid and the total have one free.
    pub fn take(&self, uid: u32) -> Result<ConnectionSlot, NoSlot> {
        let share = self.take_uid_share(uid).ok_or(NoSlot::UidFull)?;
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| NoSlot::AllFull)?;
        Ok(ConnectionSlot {
            _total: total,
            _uid: share,
        })
    }

    fn take_uid_share(&self, uid: u32) -> Option<UidShare> {
        let mut map = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(uid).or_insert(0);
        if *held >= self.per_uid {
            return None;
        }
        *held += 1;
        Some(UidShare {
            uid,
            by_uid: self.by_uid.clone(),
        })
    }

    /// How many connections `uid` holds.
    #[cfg(test)]
    fn held_by(&self, uid: u32) -> usize {
        let map = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&uid).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max_connections: usize, max_connections_per_uid: usize) -> ConnectionSlots {
        ConnectionSlots::new(&CallerLimits {
            max_connections,
            max_connections_per_uid,
            ..CallerLimits::default()
        })
    }

    #[test]
    fn a_uid_gets_its_share_and_gets_it_back_when_a_connection_ends() {
        let s = slots(8, 2);
        let first = s.take(65534).expect("first");
        let second = s.take(65534).expect("second");
        assert_eq!(s.take(65534).err(), Some(NoSlot::UidFull));
        assert_eq!(s.held_by(65534), 2);
        s.take(0).expect("another uid has its own share");
        drop(first);
        assert_eq!(s.held_by(65534), 1);
        let third = s.take(65534).expect("a share is free again");
        drop((second, third));
        assert_eq!(s.held_by(65534), 0);
        assert!(
            s.by_uid.lock().unwrap().is_empty(),
            "a uid with no connection is forgotten"
        );
    }

    #[test]
    fn the_total_caps_all_uids_and_a_refusal_keeps_no_share() {
        let s = slots(3, 2);
        let _held = [
            s.take(1).expect("1"),
            s.take(2).expect("2"),
            s.take(3).expect("3"),
        ];
        assert_eq!(s.take(4).err(), Some(NoSlot::AllFull));
        assert_eq!(s.held_by(4), 0, "a refused connection holds no share");
        assert_eq!(NoSlot::AllFull.metric_reason(), "too_many_connections");
        assert_eq!(NoSlot::UidFull.metric_reason(), "too_many_connections_uid");
    }
}
