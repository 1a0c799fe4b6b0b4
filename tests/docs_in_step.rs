//! The operator docs stay in step with the code: every configuration key (and its environment
//! name) and every `vdbi_*` metric family must be documented.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_config_key_is_documented() {
    let doc = read("docs/configuration.md");
    let missing: Vec<String> = vdbi::config::all_keys()
        .into_iter()
        .filter(|(k, env)| !doc.contains(&format!("`{k}`")) || !doc.contains(&format!("`{env}`")))
        .map(|(k, env)| format!("{k} ({env})"))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented config keys in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn every_metric_family_is_documented() {
    let doc = read("docs/metrics.md");
    let missing: Vec<String> = vdbi::telemetry::metrics::family_names()
        .into_iter()
        .filter(|n| !doc.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented metrics in docs/metrics.md: {missing:?}"
    );
}
