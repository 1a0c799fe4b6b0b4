//! The dashboard and the alerting rules query only what vdbi's `/metrics` serves, with the right
//! types, and the dashboard keeps releases and clusters apart. The reference is the text exposition
//! of the real registry (`vdbi::testing::exposition`), not a list kept by hand.

use std::collections::{BTreeMap, BTreeSet};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `vdbi_*` name an expression uses.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("vdbi_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// `Err` naming the problem when `name` is not a series of a served family of the right type.
fn served(name: &str, types: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(t) = types.get(name) {
        return match t.as_str() {
            "histogram" | "summary" => {
                Err(format!("{name} is a {t}: query its _bucket/_sum/_count"))
            }
            _ => Ok(()),
        };
    }
    for (suffix, allowed) in [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(t) = types.get(base) {
                return if allowed.contains(&t.as_str()) {
                    Ok(())
                } else {
                    Err(format!(
                        "{name}: {base} is a {t}, it has no {suffix} series"
                    ))
                };
            }
        }
    }
    Err(format!("{name} is not served by vdbi's /metrics"))
}

fn dashboard_exprs() -> (serde_json::Value, Vec<String>) {
    let dash: serde_json::Value =
        serde_json::from_str(&read("chart/dashboards/vdbi.json")).expect("dashboard is JSON");
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dash["panels"], &mut exprs);
    (dash, exprs)
}

fn rule_exprs() -> Vec<(String, String)> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read("chart/alerts/vdbi.rules.yaml")).expect("rules are YAML");
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            out.push((
                name.to_string(),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

#[test]
fn names_are_extracted_from_expressions() {
    let n = names_in("sum(rate(vdbi_a_total{x=\"vdbi_not\"}[5m])) / myvdbi_b + vdbi_c_bucket");
    assert!(
        n.contains("vdbi_a_total") && n.contains("vdbi_c_bucket"),
        "{n:?}"
    );
    assert!(!n.contains("vdbi_b"), "{n:?}");
    let types = BTreeMap::from([
        ("vdbi_h".to_string(), "histogram".to_string()),
        ("vdbi_c".to_string(), "counter".to_string()),
    ]);
    assert!(served("vdbi_h_bucket", &types).is_ok());
    assert!(served("vdbi_h", &types).is_err());
    assert!(served("vdbi_c_sum", &types).is_err());
    assert!(served("vdbi_missing", &types).is_err());
}

#[test]
fn every_metric_the_dashboard_queries_is_served() {
    let types = vdbi::testing::exposition::family_types();
    let (_, exprs) = dashboard_exprs();
    assert!(exprs.len() > 40, "only {} queries found", exprs.len());
    let problems: Vec<String> = exprs
        .iter()
        .flat_map(|e| names_in(e))
        .filter_map(|n| served(&n, &types).err())
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_metric_the_alerts_query_is_served() {
    let types = vdbi::testing::exposition::family_types();
    let rules = rule_exprs();
    assert!(rules.len() >= 10, "only {} rules", rules.len());
    let problems: Vec<String> = rules
        .iter()
        .flat_map(|(alert, e)| names_in(e).into_iter().map(move |n| (alert.clone(), n)))
        .filter_map(|(alert, n)| served(&n, &types).err().map(|e| format!("{alert}: {e}")))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Two releases or two clusters in one Prometheus never mix: `cluster`, `namespace` and `job`
/// variables, and every metric of every panel filtered by all three.
#[test]
fn the_dashboard_selects_cluster_namespace_and_job() {
    let (dash, exprs) = dashboard_exprs();
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "cluster", "namespace", "job"] {
        assert!(vars.contains(&v), "no ${v} variable: {vars:?}");
    }
    let selector = r#"{cluster=~"$cluster", namespace=~"$namespace", job=~"$job""#;
    for e in &exprs {
        let uses = e.matches("vdbi_").count();
        let filtered = e.matches(selector).count();
        assert_eq!(
            uses, filtered,
            "a metric of this query is not filtered: {e}"
        );
    }
}
