//! Test support is never compiled into the daemon: the `vdbi-testkit` crate and the `nri` crate's
//! `test-peer` feature are dev-only. Checked on the dependency graph cargo resolves for the
//! library and binary, on the sources, and on the `vdbi` binary this test run built (the release
//! binary by scripts/check-release.sh).

use std::path::Path;
use std::process::Command;

/// `cargo tree` of what the daemon library and binary are built from (no dev-dependencies).
fn normal_tree() -> String {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-p",
            "vdbi",
            "-e",
            "normal,features",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_daemon_dependency_graph_holds_no_test_support() {
    let tree = normal_tree();
    // The graph is the real one: vdbi and its own protocol crate are in it.
    assert!(tree.lines().any(|l| l.starts_with("vdbi v")), "{tree}");
    assert!(tree.lines().any(|l| l.starts_with("nri v")), "{tree}");
    assert!(
        !tree.contains("vdbi-testkit"),
        "testkit in the daemon's graph:\n{tree}"
    );
    assert!(
        !tree.contains("test-peer"),
        "nri's test-peer in the daemon's graph:\n{tree}"
    );
}

#[test]
fn the_library_sources_do_not_reach_the_testkit() {
    fn walk(dir: &Path, bad: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, bad);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("vdbi_testkit") || text.contains("pub mod testing") {
                    bad.push(path.display().to_string());
                }
            }
        }
    }
    let mut bad = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut bad);
    assert!(bad.is_empty(), "test support in src/: {bad:?}");
}

#[test]
fn the_daemon_binary_has_no_testkit_symbols() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_vdbi")).expect("the vdbi binary");
    let has = |needle: &[u8]| bin.windows(needle.len()).any(|w| w == needle);
    // The symbol table is there: the daemon's own functions are named in it.
    assert!(has(b"start_with_metrics"), "no symbols in the vdbi binary");
    assert!(!has(b"vdbi_testkit"), "testkit code in the vdbi binary");
    // nri's `test-peer` feature is unified into this test build (vdbi's dev-dependencies turn it
    // on); the release binary is checked for it by scripts/check-release.sh.
}
