//! End-to-end: Transit's `rotate` adds a version each time it is received, so keyward
//! never resends it blindly. A proxy in front of OpenBao drops the answer to the first
//! rotate after OpenBao acted on it (as when a node dies after acting); `keyward key
//! rotate` through it still succeeds and the key gains exactly one version.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{keyward_bin, keyward_ok, required_env, unique, vault_api};
use tempfile::TempDir;

/// Transit's latest version of key `name`.
fn transit_version(name: &str) -> u32 {
    let body = vault_api("GET", &format!("transit/keys/{name}"), None);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    u32::try_from(v["data"]["latest_version"].as_u64().unwrap()).unwrap()
}

/// An HTTP proxy in front of OpenBao that forwards each request on a fresh upstream
/// connection and drops the answer to the first `POST .../rotate` after OpenBao acted
/// on it: the client sees its connection close, as when a node dies after acting.
/// Returns its address and whether it has lost an answer yet.
fn answer_losing_proxy(upstream: &str) -> (String, Arc<AtomicBool>) {
    let upstream = upstream
        .strip_prefix("http://")
        .expect("http VAULT_ADDR")
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let (upstream, lost) = (upstream.clone(), lost_flag.clone());
            std::thread::spawn(move || {
                while let Some((line, request)) = read_request(&mut client) {
                    let mut server = TcpStream::connect(&upstream).expect("OpenBao");
                    server.write_all(&request).expect("to OpenBao");
                    let mut answer = Vec::new();
                    server.read_to_end(&mut answer).expect("from OpenBao");
                    let rotate = line.starts_with("POST ") && line.contains("/rotate ");
                    if rotate && !lost.swap(true, Ordering::SeqCst) {
                        return;
                    }
                    if client.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, lost)
}

/// One HTTP/1.1 request from `conn`: its request line, and the request rewritten with
/// `Connection: close` for the upstream. `None` when the connection ends.
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap_or(0));
    let mut body = vec![0; length];
    conn.read_exact(&mut body).ok()?;
    let kept: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let line = head.lines().next()?.to_string();
    Some((
        line,
        [
            format!("{kept}Connection: close\r\n\r\n").into_bytes(),
            body,
        ]
        .concat(),
    ))
}

#[test]
fn a_transit_rotate_whose_answer_is_lost_is_not_sent_twice() {
    let vault = required_env("VAULT_ADDR");
    let name = unique("kw-kek-lost");
    let uri = format!("transit:{name}");
    let tmp = TempDir::new().unwrap();
    let state = tmp.path().join("state");
    keyward_ok(
        &state,
        &["key", "generate", "--key", &uri, "--algorithm", "aes-256"],
    );
    let (proxy, lost) = answer_losing_proxy(&vault);
    let out = Command::new(keyward_bin())
        .arg("--state-dir")
        .arg(&state)
        .args(["key", "rotate", "--key", &uri])
        .env("VAULT_ADDR", &proxy)
        .env_remove("KEYWARD_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lost.load(Ordering::SeqCst), "the proxy lost no answer");
    assert_eq!(transit_version(&name), 2, "Transit rotated more than once");
    assert!(stdout.contains("to version 2"), "{stdout}");
}
