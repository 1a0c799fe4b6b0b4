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
fn noisy_neighbour_smoke() {
    smoke(&["noisy-neighbour"]);
}

#[test]
fn renewal_smoke() {
    smoke(&["renewal"]);
}

#[test]
fn churn_smoke() {
    smoke(&["churn"]);
}

#[test]
fn nri_smoke() {
    smoke(&["nri"]);
}

#[test]
fn footprint_smoke() {
    // The daemon binary of this workspace, built by `cargo test --workspace` (same profile).
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("vdbi");
    smoke(&["footprint", "--vdbi-bin", bin.to_str().unwrap()]);
}

#[test]
fn chaos_smoke() {
    // One fault of each kind on a few pods; fails on any leftover.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("vdbi");
    smoke(&["chaos", "--vdbi-bin", bin.to_str().unwrap()]);
}
