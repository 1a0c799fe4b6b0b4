//! The dashboard and the alerting rules query only what vdbi's `/metrics` serves, with the right
//! types, and the dashboard keeps releases and clusters apart. The reference is the text exposition
//! of the real registry (`vdbi_testkit::exposition`), not a list kept by hand.

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
    let types = vdbi_testkit::exposition::family_types();
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
    let types = vdbi_testkit::exposition::family_types();
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

/// The dashboard's variables, by name, with the query each one runs (`None` for the datasource).
fn dashboard_variables(dash: &serde_json::Value) -> Vec<(String, Option<String>)> {
    dash["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .map(|v| {
            let name = v["name"].as_str().expect("variable name").to_string();
            let query = v["definition"]
                .as_str()
                .or(v["query"]["query"].as_str())
                .filter(|_| v["type"] == "query")
                .map(str::to_string);
            (name, query)
        })
        .collect()
}

/// Every variable filters something: a variable no panel uses only misleads (its selection
/// changes nothing), and each query variable narrows by the ones before it.
#[test]
fn every_dashboard_variable_is_used() {
    let (dash, exprs) = dashboard_exprs();
    let panels = dash["panels"].to_string();
    let vars = dashboard_variables(&dash);
    assert!(vars.len() >= 4, "{vars:?}");
    for (name, _) in &vars {
        let (plain, braced) = (format!("${name}"), format!("${{{name}}}"));
        let used = |t: &str| {
            t.match_indices(&plain).any(|(i, _)| {
                // `$namespace` must not be counted as a use of `$name`.
                !t[i + plain.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            }) || t.contains(&braced)
        };
        assert!(
            panels.contains(&braced) || exprs.iter().any(|e| used(e)),
            "variable {name} is used by no panel"
        );
    }
    let order: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for (i, (name, query)) in vars.iter().enumerate() {
        let Some(q) = query else { continue };
        for earlier in &order[..i] {
            if *earlier != "datasource" {
                assert!(
                    q.contains(&format!("${earlier}")),
                    "variable {name} does not narrow by ${earlier}: {q}"
                );
            }
        }
    }
}

#[test]
fn every_metric_the_dashboard_variables_query_is_served() {
    let types = vdbi_testkit::exposition::family_types();
    let (dash, _) = dashboard_exprs();
    let queries: Vec<String> = dashboard_variables(&dash)
        .into_iter()
        .filter_map(|(_, q)| q)
        .collect();
    assert!(queries.len() >= 3, "{queries:?}");
    let problems: Vec<String> = queries
        .iter()
        .flat_map(|q| {
            let names = names_in(q);
            assert!(
                !names.is_empty(),
                "variable query reads no vdbi metric: {q}"
            );
            names
        })
        .filter_map(|n| served(&n, &types).err())
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The label names a `by (...)` / `without (...)` clause of `expr` lists.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["by (", "by(", "without (", "without("] {
        for (i, _) in expr.match_indices(kw) {
            let rest = &expr[i + kw.len()..];
            let list = &rest[..rest.find(')').unwrap_or(rest.len())];
            out.extend(list.split(',').map(|l| l.trim().to_string()));
        }
    }
    out
}

/// Series of one pod's credentials carry the pod's namespace as `namespace`, which clashes with
/// the scrape target's: with the chart's ServiceMonitor Prometheus keeps vdbi's namespace as
/// `namespace` and renames the pod's to `exported_namespace`. A panel grouping such a family by
/// `namespace` would show vdbi's namespace, not the pods'. Grouping by the pod's namespace goes
/// through `app_namespace`, taken from `exported_namespace` when the scrape renamed it and from
/// `namespace` otherwise.
#[test]
fn the_pods_namespace_is_read_where_the_scrape_puts_it() {
    let labels = vdbi_testkit::exposition::family_labels();
    let (dash, _) = dashboard_exprs();
    let with_pod_namespace = |e: &str| {
        names_in(e).into_iter().any(|n| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|b| labels.contains_key(*b))
                .unwrap_or(&n)
                .to_string();
            labels
                .get(&base)
                .is_some_and(|l| l.iter().any(|l| l == "namespace"))
        })
    };
    let idiom = [
        r#""app_namespace", "$1", "namespace", "(.*)")"#,
        r#""app_namespace", "$1", "exported_namespace", "(.+)")"#,
    ];
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap_or_default();
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            if !with_pod_namespace(e) {
                continue;
            }
            checked += 1;
            let groups = grouping_labels(e);
            assert!(
                !groups.iter().any(|g| g == "namespace"),
                "groups a per-pod family by the scrape's namespace: {e}"
            );
            assert!(
                !legend.contains("{{namespace}}"),
                "legend shows the scrape's namespace for a per-pod family: {legend} ({e})"
            );
            if groups.iter().any(|g| g == "app_namespace") || legend.contains("app_namespace") {
                for step in idiom {
                    assert!(e.contains(step), "app_namespace without {step}: {e}");
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} per-pod queries found");
    assert!(
        grouping_labels("sum by (a, b) (x) / sum without(c) (y)") == ["a", "b", "c"],
        "grouping clauses are parsed"
    );
}
