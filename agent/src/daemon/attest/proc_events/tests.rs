//! Tests of the process-events subscription against this kernel (they need root, as
//! the test suite runs) and of the datagram parser.

use super::*;
use std::io::Write;
use std::process::{Command, Stdio};

/// A shell that has started (so its own exec's event is queued) and, once a line
/// arrives on its input, execs another shell, which prints a line and waits.
fn waiting_shell() -> std::process::Child {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "echo started; read line; exec sh -c 'echo ran; read line'",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(line_from(&mut child), "started\n");
    child
}

/// The next line `child` prints. (Reads byte by byte: nothing is buffered past it.)
fn line_from(child: &mut std::process::Child) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.last() != Some(&b'\n') && std::io::Read::read(out, &mut byte).unwrap() == 1 {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Lets `child` go on (to its exec or id change) and waits until it has run on
/// (the event is queued before that).
fn let_it_go_on(child: &mut std::process::Child) {
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line_from(child), "ran\n");
}

// Needs CAP_NET_ADMIN in the initial namespaces (the test suite runs as root).
#[test]
fn an_exec_of_a_watched_process_changes_its_stamp_and_no_other() {
    let events = ProcEvents::open().expect("process events (run as root)");
    let mut child = waiting_shell();
    let mut other = waiting_shell();
    let (watch, stamp) = events.watch(child.id() as i32);
    let (unmoved, unmoved_stamp) = events.watch(std::process::id() as i32);
    assert_eq!(watch.stamp(), stamp, "nothing happened yet");
    let_it_go_on(&mut other);
    assert_eq!(watch.stamp(), stamp, "another process's exec");
    let_it_go_on(&mut child);
    assert_ne!(watch.stamp(), stamp, "its exec");
    assert_eq!(unmoved.stamp(), unmoved_stamp);
    for c in [&mut child, &mut other] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// A [`waiting_shell`] watched through `events`, with a pidfd for it and the stamp
/// the watch started at.
fn watched_shell(events: &ProcEvents) -> (std::process::Child, OwnedFd, Watch, Stamp) {
    let child = waiting_shell();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let (watch, stamp) = events.watch(child.id() as i32);
    (child, fd, watch, stamp)
}

#[test]
fn a_later_calls_single_poll_sees_an_exec_queued_before_it_and_an_exit() {
    // No idle reader: the exec's event waits in the queue until the poll.
    let events = ProcEvents::subscribed().expect("process events (run as root)");
    let (mut child, fd, watch, stamp) = watched_shell(&events);
    assert_eq!(watch.stamp_and_exit(fd.as_fd()), (stamp, false));
    let_it_go_on(&mut child);
    let (after, exited) = watch.stamp_and_exit(fd.as_fd());
    assert!(!exited);
    assert_ne!(after, stamp, "its exec, queued before the poll");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(watch.stamp_and_exit(fd.as_fd()).1, "its exit");
}

#[test]
fn a_later_calls_poll_waits_for_a_reader_that_may_hold_an_event() {
    let events = ProcEvents::open().expect("process events (run as root)");
    let (mut child, fd, watch, stamp) = watched_shell(&events);
    // A reader that took an event for the process from the socket (the queue is empty
    // now) and has not applied it yet: counted in `draining`, holding the lock.
    let held = events.0.state.lock().unwrap();
    events.0.draining.fetch_add(1, SeqCst);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| done.send(watch.stamp_and_exit(fd.as_fd())).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(finished.try_recv().is_err(), "the poll did not wait");
        held.watched[&(child.id() as i32)]
            .generation
            .fetch_add(1, SeqCst);
        events.0.draining.fetch_sub(1, SeqCst);
        drop(held);
        let (after, exited) = finished.recv().unwrap();
        assert!(!exited);
        assert_ne!(after, stamp, "the reader's event");
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_uid_change_of_a_watched_process_changes_its_stamp() {
    let events = ProcEvents::open().expect("process events (run as root)");
    let script = "import os,sys; print('started',flush=True); sys.stdin.readline(); \
                  os.setresuid(65534,65534,65534); print('ran',flush=True); sys.stdin.readline()";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(line_from(&mut child), "started\n");
    let (watch, stamp) = events.watch(child.id() as i32);
    assert_eq!(watch.stamp(), stamp, "nothing happened yet");
    let_it_go_on(&mut child);
    assert_ne!(watch.stamp(), stamp, "its setresuid");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_lost_event_ends_every_stamp_and_a_watch_ends_with_its_last_holder() {
    let events = ProcEvents::open().expect("process events (run as root)");
    let (watch, before) = events.watch(7);
    events.0.lost_events();
    assert_ne!(watch.stamp(), before);
    assert_ne!(watch.current(), before, "read without the lock too");

    let (a, _) = events.watch(42);
    let (b, _) = events.watch(42);
    drop(a);
    assert!(events.0.state.lock().unwrap().watched.contains_key(&42));
    drop(b);
    assert!(!events.0.state.lock().unwrap().watched.contains_key(&42));
}

#[test]
fn events_the_kernel_could_not_queue_end_every_stamp() {
    let events = ProcEvents::open().expect("process events (run as root)");
    let (watch, stamp) = events.watch(std::process::id() as i32);
    // A buffer of a few events, and nobody reading it (the lock every reader
    // takes is held) while a shell execs 300 times: the kernel drops events.
    sockopt::set_socket_recv_buffer_size_force(&events.0.socket, 0).unwrap();
    let held = events.0.state.lock().unwrap();
    let storm = Command::new("sh")
        .args(["-c", "for i in $(seq 300); do /bin/true; done"])
        .status()
        .unwrap();
    assert!(storm.success());
    drop(held);
    let after = watch.stamp();
    assert_ne!(
        after, stamp,
        "no event for this process, but some were lost"
    );
    assert_eq!(watch.stamp(), after, "nothing lost since");
}

#[test]
fn datagrams_that_are_not_process_events_change_nothing() {
    let mut state = State::default();
    state.watched.insert(7, Watched::default());
    let generation = |state: &State| state.watched[&7].generation.load(SeqCst);
    let mut exec = vec![0u8; EVENT_DATA + 8];
    let len = exec.len() as u32;
    exec[..4].copy_from_slice(&len.to_ne_bytes());
    exec[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
    exec[NLMSG_HDR..NLMSG_HDR + 4].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
    exec[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
    exec[EVENT..EVENT + 4].copy_from_slice(&EVENT_EXEC.to_ne_bytes());
    exec[EVENT_DATA + 4..EVENT_DATA + 8].copy_from_slice(&7i32.to_ne_bytes());
    let mut other_index = exec.clone();
    other_index[NLMSG_HDR] = 9;
    for bad in [&exec[..20], &other_index[..], &[0xff; 64][..], &[][..]] {
        state.apply(bad);
    }
    assert_eq!(generation(&state), 0);
    state.apply(&exec);
    assert_eq!(generation(&state), 1);
}
