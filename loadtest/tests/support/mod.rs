//! What the smoke test binaries share: run one scenario of the `loadtest` binary with `--smoke`.

use std::process::Command;

/// Runs `loadtest --smoke --out <tmp> ARGS...`; fails unless it succeeds and writes its JSON.
pub fn smoke(args: &[&str]) {
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
