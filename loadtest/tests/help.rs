//! `platform/vdbi-platform loadtest --help` answers at once (no platform, no build) and lists every
//! flag of every scenario; every flag of the harness has a help text. No platform needed.

use std::process::Command;

const SCENARIOS: &[&str] = &[
    "admission",
    "noisy-neighbour",
    "renewal",
    "churn",
    "chaos",
    "nri",
    "footprint",
    "compare",
];

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("runs");
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn harness_help(scenario: &str) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([scenario, "--help"])
        .env_remove("VDBI_PLATFORM_ENV"))
}

/// `--flag` names of a clap help page, with their help text: on the flag's line after two
/// spaces, or on the next line (clap's long help).
fn options(help: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = help.lines().map(str::trim_start).collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("--") && !l.starts_with("--help"))
        .map(|(i, l)| {
            let name = l.split([' ', '=']).next().unwrap().to_string();
            let same_line = l.split_once("  ").map(|(_, t)| t.trim()).unwrap_or("");
            let next = lines.get(i + 1).copied().unwrap_or("");
            let text = if !same_line.is_empty() {
                same_line
            } else if !next.starts_with('-') {
                next
            } else {
                ""
            };
            (name, text.to_string())
        })
        .collect()
}

#[test]
fn the_platform_script_prints_help_at_once_with_every_flag() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let t = std::time::Instant::now();
    let script = run(Command::new(format!("{root}/platform/vdbi-platform"))
        .args(["loadtest", "--help"])
        // Nothing of the platform is looked at: a missing env file changes nothing.
        .env("VDBI_PLATFORM_ENV", "/nonexistent"));
    let took = t.elapsed();
    println!("platform/vdbi-platform loadtest --help: {took:?}");
    for scenario in SCENARIOS {
        assert!(
            script.contains(&format!("\n  {scenario} ")),
            "{scenario} missing"
        );
        for (flag, _) in options(&harness_help(scenario)) {
            assert!(
                script.contains(&flag),
                "{scenario} {flag} missing from the script's help"
            );
        }
    }
    for (flag, _) in options(&run(
        Command::new(env!("CARGO_BIN_EXE_loadtest")).arg("--help")
    )) {
        assert!(
            script.contains(&flag),
            "global {flag} missing from the script's help"
        );
    }
    // `SCENARIO --help` too.
    let again = run(Command::new(format!("{root}/platform/vdbi-platform"))
        .args(["loadtest", "churn", "--help"])
        .env("VDBI_PLATFORM_ENV", "/nonexistent"));
    assert_eq!(again, script);
}

#[test]
fn every_harness_flag_has_a_help_text() {
    let mut pages = vec![run(
        Command::new(env!("CARGO_BIN_EXE_loadtest")).arg("--help")
    )];
    pages.extend(SCENARIOS.iter().map(|s| harness_help(s)));
    for page in pages {
        for (flag, text) in options(&page) {
            // Less clap's own [default: ...] / [possible values: ...].
            let described = !text.is_empty() && !text.starts_with('[');
            assert!(described, "{flag} has no help text");
        }
    }
}
