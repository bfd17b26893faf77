//! A relayed connection to the agent's socket, for attacks on attestation: a `perl`
//! process (any interpreter copy, run as any user, in any namespace) connects to the
//! socket, forks a relay that carries the connection over its stdin/stdout, and then
//! stays, exits, or execs another program. The test speaks gRPC through the relay, so
//! what the connecting process does after connecting is up to the test.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint, Uri};

/// The perl program: `perl -e RELAY SOCKET stay|exit|exec [PROGRAM ARGS...]`.
pub const RELAY: &str = r#"
use Socket; use IO::Select;
my ($path, $mode, @prog) = @ARGV;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
connect($s, pack_sockaddr_un($path)) or die "connect: $!";
my $relay = fork() // die "fork: $!";
if ($relay == 0) {
    my $sel = IO::Select->new(\*STDIN, $s);
    while (my @ready = $sel->can_read) {
        for my $h (@ready) {
            my $n = sysread($h, my $buf, 65536);
            exit 0 if !$n;
            syswrite(fileno($h) == fileno($s) ? \*STDOUT : $s, $buf) or exit 0;
        }
    }
    exit 0;
}
close($s);
exit 0 if $mode eq 'exit';
if ($mode eq 'exec') { exec { $prog[0] } @prog; die "exec: $!" }
waitpid($relay, 0);
"#;

/// A running relay: the process that connected, and a channel through its relay.
pub struct Relay {
    /// The process that connected (it may have exec'd or exited since).
    pub child: Child,
    /// Its process id.
    pub pid: u32,
    /// gRPC over the relayed connection.
    pub channel: Channel,
}

/// `command` run with the relay on its stdin/stdout; it must end up running `RELAY`
/// (e.g. `perl -e RELAY SOCKET MODE` behind `setpriv`, `unshare` or `sh -c 'exec ..'`).
pub async fn start(mut command: Command) -> Relay {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the relay");
    let pid = child.id().expect("relay pid");
    let io = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let io = Arc::new(Mutex::new(Some(io)));
    let channel = Endpoint::from_static("http://agent")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = io.lock().unwrap().take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the relay carries one connection"))
            }
        }))
        .await
        .expect("connect through the relay");
    Relay {
        child,
        pid,
        channel,
    }
}

/// `perl -e RELAY SOCKET MODE ARGS..` run from `interpreter`, as `uid` (and its group,
/// no supplementary groups) through `setpriv`.
pub fn perl_as(uid: u32, interpreter: &Path, socket: &Path, mode: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(interpreter)
        .arg("-e")
        .arg(RELAY)
        .arg(socket)
        .args(mode)
        .current_dir("/");
    c
}

/// A copy of `/usr/bin/perl` at `path`, executable by anyone.
pub fn perl_copy(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::copy("/usr/bin/perl", path).expect("copy perl");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
