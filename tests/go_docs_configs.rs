//! The six full configuration examples of vault-db-injector's documentation start vdbi. Each
//! fixture in `tests/fixtures/go-docs/` names the page and section it comes from. Three of them
//! carry keys the Go daemon silently ignores (`SyncTTLSecond`, `webhookMatchLabels`): vdbi ignores
//! them too, with a warning and a suggestion, and only `check-config --strict` refuses them.

use std::path::PathBuf;
use std::process::{Command, Output};

const VDBI: &str = env!("CARGO_BIN_EXE_vdbi");

/// (fixture, mode, the unknown keys it carries, with the suggestion vdbi must print)
const EXAMPLES: &[(&str, &str, &[&str])] = &[
    (
        "reference-injector.yaml",
        "injector",
        &["warning: webhookMatchLabels: unknown key, ignored (a Helm value of vault-db-injector"],
    ),
    (
        "reference-renewer.yaml",
        "renewer",
        &["warning: SyncTTLSecond: unknown key, ignored (did you mean `syncTTLSecond`?)"],
    ),
    ("reference-revoker.yaml", "revoker", &[]),
    ("how-it-works-injector.yaml", "injector", &[]),
    (
        "how-it-works-renewer.yaml",
        "renewer",
        &["warning: SyncTTLSecond: unknown key, ignored (did you mean `syncTTLSecond`?)"],
    ),
    ("how-it-works-revoker.yaml", "revoker", &[]),
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/go-docs")
        .join(name)
}

fn check_config(file: &str, strict: bool) -> Output {
    let mut cmd = Command::new(VDBI);
    cmd.arg("check-config");
    if strict {
        cmd.arg("--strict");
    }
    cmd.arg("--config").arg(fixture(file));
    for (k, _) in std::env::vars() {
        if k.starts_with("INJECTOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run vdbi")
}

#[test]
fn every_go_docs_example_config_is_accepted() {
    for (file, mode, unknown) in EXAMPLES {
        let o = check_config(file, false);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "{file} refused:\n{err}");
        assert!(out.contains(&format!("mode: {mode} ")), "{file}:\n{out}");
        for line in *unknown {
            assert!(err.contains(line), "{file}: missing {line:?} in\n{err}");
        }
        let listed = err.matches("unknown key").count();
        assert_eq!(listed, unknown.len(), "{file}:\n{err}");
        // The ignored SyncTTLSecond leaves the default interval, as in the Go version.
        if unknown.iter().any(|u| u.contains("SyncTTLSecond")) {
            assert!(out.contains("syncTTLSecond: 300 "), "{out}");
        }
    }
}

#[test]
fn strict_check_refuses_only_the_examples_with_unknown_keys() {
    for (file, _, unknown) in EXAMPLES {
        let o = check_config(file, true);
        let err = String::from_utf8_lossy(&o.stderr);
        if unknown.is_empty() {
            assert!(o.status.success(), "{file}:\n{err}");
        } else {
            assert_eq!(o.status.code(), Some(1), "{file}:\n{err}");
            assert!(
                err.contains("unknown key(s): configuration refused (--strict)"),
                "{file}:\n{err}"
            );
        }
    }
}
