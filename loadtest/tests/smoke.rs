//! Smoke versions of the load-test scenarios (small N) against the local platform: each fails
//! on any error or on anything (KV entry, token, lease) left behind.

use std::process::Command;

fn smoke(args: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .args(args)
        .status()
        .expect("loadtest runs");
    assert!(status.success(), "loadtest {args:?} failed: {status}");
    let files: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.path().extension().is_some_and(|e| e == "json")),
        "no JSON written"
    );
}

#[test]
fn admission_legacy_smoke() {
    smoke(&["admission", "--mode", "legacy"]);
}

#[test]
fn admission_projected_smoke() {
    smoke(&["admission", "--mode", "projected"]);
}

#[test]
fn admission_nri_smoke() {
    smoke(&["admission", "--mode", "nri"]);
}

#[test]
fn renewal_smoke() {
    smoke(&["renewal"]);
}
