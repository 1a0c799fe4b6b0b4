//! The chaos scenario's smoke: one fault of each kind on a few pods; fails on any leftover.
//!
//! Its own test binary on purpose: it stops OpenBao, PostgreSQL and the kube-apiserver, so it
//! must not run beside the other smokes (the tests of one binary run in parallel; cargo runs
//! the binaries one after the other).

mod support;

#[test]
fn chaos_smoke() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("vdbi");
    support::smoke(&["chaos", "--vdbi-bin", bin.to_str().unwrap()]);
}
