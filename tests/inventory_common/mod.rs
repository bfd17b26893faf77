//! The inventory as the end-to-end tests read it: every record of a state directory,
//! those of certificates recorded one at a time (`inventory.json`) and those of each
//! `sign-csr --batch` chunk (a file each in `inventory.d/`).
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

/// Every inventory record of `state`, as JSON: `inventory.json`'s, then each chunk
/// file's (by name); none when there is no inventory yet.
pub fn records(state: &Path) -> Vec<Value> {
    let read = |path: &Path| -> Vec<Value> {
        match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data)
                .unwrap_or_else(|e| panic!("{} is not a list of records: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        }
    };
    let mut all = read(&state.join("inventory.json"));
    let mut chunks: Vec<_> = std::fs::read_dir(state.join("inventory.d"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    chunks.retain(|p| p.extension().is_some_and(|x| x == "json"));
    chunks.sort();
    for chunk in chunks {
        all.extend(read(&chunk));
    }
    all
}
