//! The kernel's process events (the proc connector, `NETLINK_CONNECTOR`), so a
//! connection's remembered attestation is checked by one `poll` (of this socket and
//! the caller's pidfd) rather than by stat calls on `/proc` for every call.
//!
//! The kernel queues an exec event (`PROC_EVENT_EXEC`) on this socket inside `execve`,
//! before the new program runs, and a uid or gid event (`PROC_EVENT_UID`,
//! `PROC_EVENT_GID`) inside every `set*id` call, before it returns. So whatever a
//! process sends after an exec or an id change, its event is already queued when the
//! agent reads the call: draining the socket then (under one lock, which every reader
//! takes) sees it; a call that finds the socket empty waits for any reader that took an
//! event and has not applied it yet (see [`Watch::stamp_and_exit`]). A watched process
//! whose event is seen gets a new generation, and a remembered attestation is reused
//! only while the generation it was made under holds. Events the kernel could not queue
//! (a full buffer) are reported as `ENOBUFS` on the next read; that ends every
//! remembered attestation at once (a new epoch).
//!
//! The kernel serves these events only to a process with `CAP_NET_ADMIN` in the
//! initial user and PID namespaces, and says so with an acknowledgement; without one,
//! [`ProcEvents::open`] fails and the agent checks fingerprints instead (`remembered`).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, bind, recv, recvfrom, sendto,
    sockopt,
};

use super::peer::polled_ready;

/// The connector's index and value for process events (`CN_IDX_PROC`, `CN_VAL_PROC`).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `NLMSG_DONE`, the type of every connector message.
const NLMSG_DONE: u16 = 3;
/// `PROC_CN_MCAST_LISTEN`.
const MCAST_LISTEN: u32 = 1;
/// The events that change what an attestation found (`enum proc_cn_event`).
const EVENT_ACK: u32 = 0;
const EVENT_EXEC: u32 = 0x2;
const EVENT_UID: u32 = 0x4;
const EVENT_GID: u32 = 0x40;
/// Offsets in a message: `struct nlmsghdr` (16 bytes), then `struct cn_msg` (20), then
/// `struct proc_event`: `what` (4), `cpu` (4), `timestamp_ns` (8), then its data.
const NLMSG_HDR: usize = 16;
const CN_MSG: usize = 20;
const EVENT: usize = NLMSG_HDR + CN_MSG;
const EVENT_DATA: usize = EVENT + 16;
/// The receive buffer asked for: room for thousands of events between two reads.
const RECV_BUFFER: usize = 4 << 20;
/// How long the kernel's acknowledgement of the subscription is waited for.
const ACK_WAIT: Duration = Duration::from_millis(500);

/// The agent's subscription to the kernel's process events; clones share it.
#[derive(Clone, Debug)]
pub struct ProcEvents(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    socket: OwnedFd,
    state: Mutex<State>,
    /// Readers that may hold events taken from the socket and not yet applied: counted
    /// from before a reader's first `recv` until after its last event is applied (see
    /// [`Watch::stamp_and_exit`]).
    draining: AtomicUsize,
    /// Incremented whenever events may have been lost (under the state's lock).
    epoch: AtomicU64,
}

/// What the events have said so far about the watched processes.
#[derive(Debug, Default)]
struct State {
    /// Per watched process (thread-group id).
    watched: HashMap<i32, Watched>,
}

/// One watched process.
#[derive(Debug, Default)]
struct Watched {
    /// How many watches are held.
    holders: usize,
    /// Incremented (under the state's lock) on each of its events; also read without
    /// the lock, by [`Watch::stamp_and_exit`].
    generation: Arc<AtomicU64>,
}

/// Where a watched process stood when a stamp was taken; equal stamps mean no exec, uid
/// or gid event for it came in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    epoch: u64,
    generation: u64,
}

/// A process watched for as long as this lives.
#[derive(Debug)]
pub(super) struct Watch {
    events: ProcEvents,
    pid: i32,
    /// The process's generation (shared with the state's entry for it).
    generation: Arc<AtomicU64>,
}

impl ProcEvents {
    /// Subscribes to exec, uid and gid events; an error names why the kernel will not
    /// send them. A thread also drains the socket while no call does.
    pub fn open() -> Result<ProcEvents, String> {
        let events = ProcEvents::subscribed()?;
        let shared = Arc::downgrade(&events.0);
        std::thread::Builder::new()
            .name("proc-events".into())
            .spawn(move || ProcEvents::drain_while_idle(shared))
            .map_err(|e| format!("cannot start the process-events reader: {e}"))?;
        Ok(events)
    }

    /// The subscription alone: nothing reads the socket until a call does.
    fn subscribed() -> Result<ProcEvents, String> {
        let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
        let socket = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            flags,
            Some(netlink::CONNECTOR),
        )
        .map_err(|e| format!("no process-events socket: {e}"))?;
        if sockopt::set_socket_recv_buffer_size_force(&socket, RECV_BUFFER).is_err() {
            // Without CAP_NET_ADMIN the subscription fails below anyway.
            let _ = sockopt::set_socket_recv_buffer_size(&socket, RECV_BUFFER);
        }
        bind(&socket, &SocketAddrNetlink::new(0, CN_IDX_PROC))
            .map_err(|e| format!("cannot join the process-events group: {e}"))?;
        // The kernel acknowledges the plain subscription (every event); then the
        // filter (Linux 6.6+; older kernels ignore the message, and the events this
        // does not need are skipped as they are read). A filtered subscriber gets no
        // acknowledgement: the filter drops it too.
        subscribe(&socket)?;
        send_listen(&socket, Some(EVENT_EXEC | EVENT_UID | EVENT_GID))?;
        Ok(ProcEvents(Arc::new(Shared {
            socket,
            state: Mutex::default(),
            draining: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        })))
    }

    /// Watches `pid` from now on; the stamp is where it stands now.
    pub(super) fn watch(&self, pid: i32) -> (Watch, Stamp) {
        let mut state = self.drained();
        let watched = state.watched.entry(pid).or_default();
        watched.holders += 1;
        let watch = Watch {
            events: self.clone(),
            pid,
            generation: watched.generation.clone(),
        };
        let stamp = watch.current();
        (watch, stamp)
    }

    /// Reads every queued event, then returns the state (every event read is applied).
    fn drained(&self) -> MutexGuard<'_, State> {
        let shared = &*self.0;
        shared.draining.fetch_add(1, SeqCst);
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = [0u8; 1024];
        loop {
            match recv(&shared.socket, &mut buf, RecvFlags::DONTWAIT) {
                Ok((n, _)) => state.apply(&buf[..n.min(buf.len())]),
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                // Events the kernel could not queue: nothing remembered can be
                // vouched for; the rest of the queue is read on.
                Err(Errno::NOBUFS) => shared.lost_events(),
                // A socket that no longer reads: every later read fails the same way.
                Err(_) => {
                    shared.lost_events();
                    break;
                }
            }
        }
        shared.draining.fetch_sub(1, SeqCst);
        state
    }

    /// Drains the socket whenever it is readable, so events for processes nobody asks
    /// about do not fill it between calls; ends once every handle is dropped.
    fn drain_while_idle(shared: Weak<Shared>) {
        let second = Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        while let Some(shared) = shared.upgrade() {
            let mut fds = [PollFd::new(&shared.socket, PollFlags::IN)];
            if poll(&mut fds, Some(&second)).is_ok_and(|ready| ready > 0) {
                drop(ProcEvents(shared).drained());
            }
        }
    }
}

impl Shared {
    /// Ends every stamp taken so far (events may have been lost).
    fn lost_events(&self) {
        let epoch = self.epoch.fetch_add(1, SeqCst) + 1;
        if epoch % 1024 == 1 {
            tracing::warn!("process events were lost; remembered attestations are read again");
        }
    }
}

impl Watch {
    /// Where the watched process stands now, after every queued event is read.
    pub(super) fn stamp(&self) -> Stamp {
        let _drained = self.events.drained();
        self.current()
    }

    /// Where the watched process stands now, and whether `pidfd` polled readable (its
    /// process has exited; a failed poll counts as exited), from one `poll` of both
    /// `pidfd` and the events socket: what a later call on a connection does, in one
    /// system call (and without the lock) where no event is waiting.
    ///
    /// Every event the kernel queued before the poll has been applied when the stamp is
    /// read: either it is still queued, so the socket polls readable and the queue is
    /// drained here, or a reader took it before the poll; that reader counted itself in
    /// `draining` before its `recv` and uncounts itself only after applying what it
    /// read, so a `draining` of zero, read after the poll, means it is applied, and
    /// anything else means the lock is waited for.
    pub(super) fn stamp_and_exit(&self, pidfd: BorrowedFd<'_>) -> (Stamp, bool) {
        let shared = &*self.events.0;
        let [waiting, exited] = polled_ready(&mut [
            PollFd::new(&shared.socket, PollFlags::IN),
            PollFd::from_borrowed_fd(pidfd, PollFlags::IN),
        ]);
        // The poll's look at the queue comes before the look at `draining` (on every
        // architecture, not only on x86's ordered loads).
        std::sync::atomic::fence(SeqCst);
        let stamp = if waiting || shared.draining.load(SeqCst) != 0 {
            self.stamp()
        } else {
            self.current()
        };
        (stamp, exited)
    }

    /// The stamp from what has been applied so far.
    fn current(&self) -> Stamp {
        Stamp {
            epoch: self.events.0.epoch.load(SeqCst),
            generation: self.generation.load(SeqCst),
        }
    }
}

#[cfg(test)]
impl ProcEvents {
    /// Counts an event for `pid` as if the kernel had sent one.
    pub(super) fn note_event_for(&self, pid: i32) {
        if let Some(w) = self.drained().watched.get(&pid) {
            w.generation.fetch_add(1, SeqCst);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self
            .events
            .0
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(watched) = state.watched.get_mut(&self.pid) {
            watched.holders -= 1;
            if watched.holders == 0 {
                state.watched.remove(&self.pid);
            }
        }
    }
}

impl State {
    /// Applies one datagram: exec, uid and gid events of watched processes.
    fn apply(&mut self, mut datagram: &[u8]) {
        while datagram.len() >= NLMSG_HDR {
            let len = u32_at(datagram, 0) as usize;
            if len < NLMSG_HDR || len > datagram.len() {
                return;
            }
            if let Some((what, tgid)) = event(&datagram[..len])
                && matches!(what, EVENT_EXEC | EVENT_UID | EVENT_GID)
                && let Some(w) = self.watched.get(&tgid)
            {
                w.generation.fetch_add(1, SeqCst);
            }
            datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
        }
    }
}

/// The kind of a process event and the thread-group id it is about (its first field
/// for exec, uid and gid events, or an acknowledgement's error number).
fn event(message: &[u8]) -> Option<(u32, i32)> {
    let header_ok = message.len() >= EVENT_DATA + 8
        && u16::from_ne_bytes([message[4], message[5]]) == NLMSG_DONE
        && u32_at(message, NLMSG_HDR) == CN_IDX_PROC
        && u32_at(message, NLMSG_HDR + 4) == CN_VAL_PROC;
    header_ok.then(|| {
        let what = u32_at(message, EVENT);
        let field = if what == EVENT_ACK { 0 } else { 4 };
        (what, u32_at(message, EVENT_DATA + field) as i32)
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Sends `PROC_CN_MCAST_LISTEN` (with an event filter, or in the older form without)
/// and returns the number the kernel's acknowledgement answers, one higher.
fn send_listen(socket: &OwnedFd, filter: Option<u32>) -> Result<u32, String> {
    let nonce = std::process::id();
    let data_len: u16 = if filter.is_some() { 8 } else { 4 };
    let mut msg = Vec::with_capacity(EVENT + 8);
    let total = (EVENT + usize::from(data_len)) as u32;
    msg.extend_from_slice(&total.to_ne_bytes());
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // sequence number
    msg.extend_from_slice(&nonce.to_ne_bytes());
    // The connector's id, its sequence number (the kernel numbers its own messages)
    // and `ack`, which the acknowledgement answers.
    for word in [CN_IDX_PROC, CN_VAL_PROC, 0, nonce] {
        msg.extend_from_slice(&word.to_ne_bytes());
    }
    msg.extend_from_slice(&data_len.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&MCAST_LISTEN.to_ne_bytes());
    if let Some(events) = filter {
        msg.extend_from_slice(&events.to_ne_bytes());
    }
    sendto(
        socket,
        &msg,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )
    .map_err(|e| format!("cannot subscribe to process events: {e}"))?;
    Ok(nonce.wrapping_add(1))
}

/// Subscribes to every process event and waits for the kernel's acknowledgement.
fn subscribe(socket: &OwnedFd) -> Result<(), String> {
    let answer = send_listen(socket, None)?;
    let deadline = Instant::now() + ACK_WAIT;
    let mut buf = [0u8; 1024];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let wait = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(socket, PollFlags::IN)];
        if poll(&mut fds, Some(&wait)).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((n, _, from)) = recvfrom(socket.as_fd(), &mut buf, RecvFlags::DONTWAIT) else {
            continue;
        };
        let message = &buf[..n.min(buf.len())];
        // An acknowledgement comes from the kernel (port 0) and answers our `ack`.
        let from_kernel = from
            .and_then(|a| SocketAddrNetlink::try_from(a).ok())
            .is_some_and(|a| a.pid() == 0);
        if from_kernel
            && let Some((EVENT_ACK, err)) = event(message)
            && u32_at(message, NLMSG_HDR + 12) == answer
        {
            return match err {
                0 => Ok(()),
                e => Err(format!(
                    "the kernel refused process events: {}",
                    Errno::from_raw_os_error(e)
                )),
            };
        }
    }
    Err("the kernel did not acknowledge the process-events subscription (it serves them only to a process with CAP_NET_ADMIN in the initial namespaces)".into())
}

#[cfg(test)]
mod tests;
