//! Smoke versions of the load-test scenarios (small N) against the local platform: each fails
//! on any error or on anything (KV entry, token, lease) left behind.

mod support;

use support::smoke;

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
