//! The chaos scenario's smoke: one fault of each kind on a few pods; fails on any leftover.
//!
//! Its own test binary on purpose: it stops OpenBao, PostgreSQL and the kube-apiserver, so it
//! must not run beside the other smokes (the tests of one binary run in parallel; cargo runs
//! the binaries one after the other).

mod support;

/// Legacy injector, every fault kind; then a projected injector, with the faults that touch its
/// issuance (injector kill) and the sweep that ends what it left (leading revoker kill). One
/// test, so the two runs never overlap.
#[test]
fn chaos_smoke() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest")).with_file_name("vdbi");
    let bin = bin.to_str().unwrap();
    support::smoke(&["chaos", "--vdbi-bin", bin]);
    support::smoke(&[
        "chaos",
        "--vdbi-bin",
        bin,
        "--projected",
        "--fault-kinds",
        "kill-injector,kill-leading-revoker",
    ]);
}
