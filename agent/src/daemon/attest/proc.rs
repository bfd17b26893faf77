//! What attestation reads from `/proc/PID`: the process start time (`stat`, when a
//! pidfd is opened by PID) and its user and group ids (`status`), with the checks made
//! on them. The caller of these functions proves afterwards, through the connection's
//! pidfd, that the process was still running, so what was read belonged to the process
//! that connected.

/// Field 22 of `/proc/PID/stat`: the process start time in clock ticks since boot.
pub fn start_ticks(pid: i32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    parse_start_ticks(&stat).ok_or_else(|| format!("/proc/{pid}/stat has no start time"))
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name come fields 3 (state) onwards; start time is field 22.
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Refuses a process that started after the connection was accepted: it cannot be the
/// one that connected. Both times are in clock ticks since boot; within one tick the
/// order cannot be told, and the process is taken as started first.
pub fn check_started_before(started: u64, accepted: u64) -> Result<(), String> {
    if started > accepted {
        return Err(format!(
            "the process started after the connection was accepted ({started} > {accepted} ticks since boot)"
        ));
    }
    Ok(())
}

/// The user and group ids of a process (`/proc/PID/status`): real, effective, saved
/// and filesystem id, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// Real, effective, saved and filesystem user id.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem group id.
    pub gid: [u32; 4],
}

/// The ids in `/proc/PID/status`.
pub fn ids(pid: i32) -> Result<Ids, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    parse_ids(&status).ok_or_else(|| format!("/proc/{pid}/status has no Uid/Gid lines"))
}

fn parse_ids(status: &str) -> Option<Ids> {
    let four = |key: &str| -> Option<[u32; 4]> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let mut ids = line.split_whitespace().map(str::parse::<u32>);
        let mut four = [0; 4];
        for id in &mut four {
            *id = ids.next()?.ok()?;
        }
        Some(four)
    };
    Some(Ids {
        uid: four("Uid:")?,
        gid: four("Gid:")?,
    })
}

impl Ids {
    /// Refuses a process whose real or effective uid or gid is not what SO_PEERCRED
    /// recorded at connect (`uid`, `gid`; the kernel records effective ids there).
    ///
    /// A different effective id means the process changed identity after connecting
    /// (it exec'd a set-user-ID program, or dropped privileges). A different real id
    /// means a set-user-ID program run by another user, who chooses its arguments,
    /// environment and inherited descriptors; it is not taken for its owner.
    pub fn check(&self, uid: u32, gid: u32) -> Result<(), String> {
        if self.uid[..2] != [uid, uid] || self.gid[..2] != [gid, gid] {
            return Err(format!(
                "the process now runs as uid {}/{} gid {}/{} (real/effective), not as the uid {uid} gid {gid} it connected with",
                self.uid[0], self.uid[1], self.gid[0], self.gid[1]
            ));
        }
        Ok(())
    }

    /// Whether the saved and filesystem ids equal the real and effective ones (as
    /// they do in a process that has not changed ids since its last exec of a file
    /// without set-id bits): such a process can change none of its ids without
    /// `CAP_SETUID`/`CAP_SETGID` or an exec.
    pub fn all_alike(&self) -> bool {
        self.uid.iter().all(|u| *u == self.uid[0]) && self.gid.iter().all(|g| *g == self.gid[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (we ird) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_ticks(stat), Some(987_654));
        assert_eq!(parse_start_ticks("4242 (x"), None);
    }

    #[test]
    fn a_process_started_after_the_accept_is_refused() {
        assert!(check_started_before(100, 100).is_ok());
        assert!(check_started_before(99, 100).is_ok());
        let e = check_started_before(101, 100).unwrap_err();
        assert!(
            e.contains("started after the connection was accepted"),
            "{e}"
        );
    }

    #[test]
    fn status_ids_must_match_the_peer_credentials() {
        let status = "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGid:\t50\t50\t50\t50\n";
        let ids = parse_ids(status).unwrap();
        assert!(ids.check(1000, 50).is_ok());
        assert!(ids.check(0, 50).is_err(), "another uid");
        assert!(ids.check(1000, 0).is_err(), "another gid");
        // A set-user-ID root program started by uid 1000: effective 0, real 1000.
        let setuid = parse_ids("Uid:\t1000\t0\t0\t0\nGid:\t50\t50\t50\t50\n").unwrap();
        let e = setuid.check(0, 50).unwrap_err();
        assert!(e.contains("uid 1000/0"), "{e}");
        assert!(setuid.check(1000, 50).is_err());
        assert_eq!(parse_ids("Name:\tx\n"), None);
        assert_eq!(parse_ids("Uid:\t1\t1\t1\nGid:\t1\t1\t1\t1\n"), None);
    }

    #[test]
    fn ids_are_alike_only_when_saved_and_filesystem_ids_match_too() {
        let alike = parse_ids("Uid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t8\n").unwrap();
        assert!(alike.all_alike());
        // Effective id dropped to the real one, saved id still root: could go back.
        let saved = parse_ids("Uid:\t7\t7\t0\t7\nGid:\t8\t8\t8\t8\n").unwrap();
        assert!(saved.check(7, 8).is_ok() && !saved.all_alike());
        let fs_gid = parse_ids("Uid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t0\n").unwrap();
        assert!(!fs_gid.all_alike());
    }

    #[test]
    fn this_process_reads_back() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).unwrap() > 0);
        let meta = std::fs::metadata("/proc/self").unwrap();
        use std::os::unix::fs::MetadataExt;
        ids(me).unwrap().check(meta.uid(), meta.gid()).unwrap();
    }
}
