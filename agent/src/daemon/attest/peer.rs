//! The caller behind a connection, bound when the connection is accepted: the
//! credentials the kernel recorded at connect (SO_PEERCRED) and a pidfd for the process
//! that connected (SO_PEERPIDFD), so every later check asks about that process and
//! never about whatever process now holds its PID.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::AttestError;
use super::proc;
use super::remembered::Remembered;

/// The process that connected, as the kernel recorded it at connect time.
#[derive(Debug)]
pub struct Peer {
    /// The effective user id at connect (SO_PEERCRED).
    pub uid: u32,
    /// The effective group id at connect (SO_PEERCRED).
    pub gid: u32,
    /// The process id at connect (SO_PEERCRED), in this process's PID namespace;
    /// `None` when the kernel could not name it here.
    pub pid: Option<i32>,
    /// A pidfd for the connecting process, or why there is none.
    pidfd: Result<OwnedFd, String>,
    /// The connection's last attestation that read `/proc`, for its later calls.
    pub(super) remembered: Remembered,
}

impl Peer {
    /// Binds the peer of `socket`, whose SO_PEERCRED credentials are `uid`, `gid` and
    /// `pid`, accepted `since_accept` ago.
    ///
    /// SO_PEERPIDFD names the process that called `connect`, even if its PID has been
    /// reused since. On kernels before 6.5 (no SO_PEERPIDFD) the pidfd is opened by
    /// PID instead, and kept only if that process started no later than the accept.
    pub fn bind(
        socket: BorrowedFd<'_>,
        uid: u32,
        gid: u32,
        pid: Option<i32>,
        since_accept: Duration,
    ) -> Peer {
        let accepted_ticks = boot_ticks(since_accept);
        let pidfd = match getsockopt(&socket, sockopt::PeerPidfd) {
            Ok(fd) => Ok(fd),
            Err(Errno::ENOPROTOOPT) => match pid {
                Some(pid) => open_pidfd(pid, accepted_ticks),
                None => Err("the caller's process id is unknown".to_string()),
            },
            Err(e) => Err(format!("no pidfd for the caller (SO_PEERPIDFD: {e})")),
        };
        Peer {
            uid,
            gid,
            pid: pid.filter(|p| *p > 0),
            pidfd,
            remembered: Remembered::default(),
        }
    }

    /// A peer bound without a pidfd (as when neither SO_PEERPIDFD nor `pidfd_open`
    /// gave one): every check on it fails.
    #[cfg(test)]
    pub fn unknown(why: &str) -> Peer {
        Peer {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: None,
            pidfd: Err(why.to_string()),
            remembered: Remembered::default(),
        }
    }

    /// Ok while the process that connected is running; an error once it has exited
    /// (a zombie counts as exited), or if it could not be bound at accept.
    pub fn check_alive(&self) -> Result<(), AttestError> {
        match &self.pidfd {
            Ok(fd) if !exited(fd.as_fd()) => Ok(()),
            Ok(_) => Err(AttestError::Gone(
                "the process that connected has exited".into(),
            )),
            Err(why) => Err(AttestError::Gone(why.clone())),
        }
    }

    /// The pidfd of the process that connected (to poll beside another descriptor);
    /// the same error as [`Peer::check_alive`] when there is none.
    pub(super) fn pidfd(&self) -> Result<BorrowedFd<'_>, AttestError> {
        self.pidfd
            .as_ref()
            .map(AsFd::as_fd)
            .map_err(|why| AttestError::Gone(why.clone()))
    }
}

/// A pidfd for `pid` opened now, kept only if that process started no later than the
/// accept (`accepted_ticks`) and is still running after its start time was read, so it
/// is the process that was connected when the connection was accepted.
pub(super) fn open_pidfd(pid: i32, accepted_ticks: u64) -> Result<OwnedFd, String> {
    let id = Pid::from_raw(pid).ok_or_else(|| format!("process id {pid} is not valid"))?;
    let fd = pidfd_open(id, PidfdFlags::empty())
        .map_err(|e| format!("no pidfd for process {pid}: {e}"))?;
    let started = proc::start_ticks(pid)?;
    proc::check_started_before(started, accepted_ticks)?;
    if exited(fd.as_fd()) {
        return Err(format!("process {pid} exited before it was bound"));
    }
    Ok(fd)
}

/// Whether the process behind `pidfd` has exited: a pidfd polls readable then. A
/// failed poll counts as exited, so an error never lets a caller through.
fn exited(pidfd: BorrowedFd<'_>) -> bool {
    polled_ready(&mut [PollFd::from_borrowed_fd(pidfd, PollFlags::IN)])[0]
}

/// Which of `fds` are ready now (a poll with no wait, retried when interrupted); all
/// of them when the poll fails, so a failure is never taken for "nothing happened".
pub(super) fn polled_ready<const N: usize>(fds: &mut [PollFd<'_>; N]) -> [bool; N] {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(fds, Some(&now)) {
            Ok(_) => return std::array::from_fn(|i| !fds[i].revents().is_empty()),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return [true; N],
        }
    }
}

/// Clock ticks since boot `ago` before now (CLOCK_BOOTTIME, in USER_HZ ticks as the
/// kernel counts process start times in `/proc/PID/stat`).
pub fn boot_ticks(ago: Duration) -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
    .saturating_sub(ago);
    let hz = u128::from(rustix::param::clock_ticks_per_second());
    u64::try_from(now.as_nanos() * hz / 1_000_000_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("start sleep")
    }

    #[test]
    fn a_pidfd_from_the_socket_follows_the_connecting_process_until_it_exits() {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let me = std::process::id() as i32;
        let peer = Peer::bind(mine.as_fd(), 0, 0, Some(me), Duration::ZERO);
        peer.check_alive().expect("this process is alive");
        drop(theirs);

        let mut child = sleeper();
        let pid = child.id() as i32;
        let fd = open_pidfd(pid, boot_ticks(Duration::ZERO)).expect("bound");
        assert!(!exited(fd.as_fd()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(exited(fd.as_fd()), "an exited process still polls alive");
    }

    #[test]
    fn a_process_that_started_after_the_accept_is_not_bound() {
        let accepted = boot_ticks(Duration::from_secs(60));
        let mut child = sleeper();
        let e = open_pidfd(child.id() as i32, accepted).unwrap_err();
        assert!(e.contains("started after"), "{e}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_connection_without_a_pidfd_is_refused() {
        let peer = Peer::unknown("the caller's credentials are unknown");
        assert!(matches!(peer.check_alive(), Err(AttestError::Gone(_))));
    }

    #[test]
    fn boot_ticks_count_back_from_now() {
        let hz = rustix::param::clock_ticks_per_second();
        let now = boot_ticks(Duration::ZERO);
        let earlier = boot_ticks(Duration::from_secs(2));
        assert!(now >= earlier + 2 * hz - 1 && now <= earlier + 3 * hz);
        let me = proc::start_ticks(std::process::id() as i32).unwrap();
        assert!(me <= now, "this process started at {me}, after now ({now})");
    }
}
