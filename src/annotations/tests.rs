use super::*;
use proptest::prelude::*;

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect()
}

fn spec(pairs: &[(&str, &str)]) -> PodDbSpec {
    match parse(&ann(pairs), "databases").unwrap() {
        PodContract::Databases(s) => s,
        other => panic!("expected databases, got {other:?}"),
    }
}

#[test]
fn classic_with_defaults() {
    let s = spec(&[
        ("main.role", "app-rw"),
        ("main.env-key-dbuser", "DB_USER"),
        ("main.env-key-dbpassword", "DB_PASS,PGPASSWORD"),
    ]);
    assert_eq!(s.engine, "databases");
    assert_eq!(s.configs.len(), 1);
    let c = &s.configs[0];
    assert_eq!(c.role, "app-rw");
    assert_eq!(c.mode, CredentialMode::Classic);
    assert_eq!(c.password_env, vec!["DB_PASS", "PGPASSWORD"]);
    assert!(c.targets("anything"));
}

#[test]
fn configs_sorted_by_name_and_pod_role_applies() {
    let s = spec(&[
        ("cluster", "pg-prod"),
        ("role", "shared"),
        ("zeta.env-key-dbuser", "Z_USER"),
        ("alpha.env-key-dbuser", "A_USER"),
        ("alpha.role", "own"),
        ("Beta.env-key-dbpassword", "B_PASS"),
    ]);
    let names: Vec<_> = s.configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["Beta", "alpha", "zeta"], "byte order");
    assert_eq!(s.engine, "pg-prod");
    assert_eq!(s.configs[1].role, "own");
    assert_eq!(s.configs[2].role, "shared");
}

#[test]
fn field_may_contain_dots_and_unknown_fields_warn() {
    let s = spec(&[
        ("db.role", "r"),
        ("db.env-key-dbuser", "U"),
        ("db.some.thing", "x"),
        ("mode", "ignored"),
    ]);
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
}

#[test]
fn uuid_list_is_split() {
    let s = spec(&[
        ("db.role", "r"),
        ("db.env-key-dbuser", "U"),
        ("uuid", "a, b"),
    ]);
    assert_eq!(s.uuids, vec!["a", "b"]);
}

#[test]
fn revoke_ttl_marks_v1_pods() {
    let a = ann(&[("revoke-ttl-seconds", "5"), ("db.role", "r")]);
    assert_eq!(parse(&a, "databases").unwrap(), PodContract::LegacyV1);
}

#[test]
fn no_config_is_not_an_error() {
    let a = ann(&[("role", "r")]);
    assert!(matches!(
        parse(&a, "databases").unwrap(),
        PodContract::NoDatabases { .. }
    ));
    assert!(matches!(
        parse(&BTreeMap::new(), "databases").unwrap(),
        PodContract::NoDatabases { .. }
    ));
}

#[test]
fn refusals_name_the_annotation() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("db.env-key-dbuser", "U")], "db.role"),
        (
            vec![
                ("db.role", "r"),
                ("db.mode", "weird"),
                ("db.env-key-dbuser", "U"),
            ],
            "db.mode",
        ),
        (vec![("db.role", "r")], "db.env-key-dbuser"),
        (
            vec![
                ("db.role", "r"),
                ("db.mode", "uri"),
                ("db.template", "postgres://@h/db"),
            ],
            "db.env-key-uri",
        ),
        (
            vec![
                ("db.role", "r"),
                ("db.mode", "uri"),
                ("db.env-key-uri", "URI"),
            ],
            "db.template",
        ),
        (
            vec![
                ("db.role", "r"),
                ("db.mode", "uri"),
                ("db.env-key-uri", "URI"),
                ("db.template", "not a url"),
            ],
            "db.template",
        ),
        (
            vec![("db.role", "r"), ("db.env-key-dbuser", "A=B")],
            "db.env-key-dbuser",
        ),
    ];
    for (pairs, needle) in cases {
        let err = parse(&ann(&pairs), "databases").unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
    }
}

#[test]
fn duplicate_env_across_configs_refused() {
    let err = parse(
        &ann(&[
            ("a.role", "r"),
            ("a.env-key-dbuser", "USER"),
            ("b.role", "r"),
            ("b.env-key-dbuser", "USER"),
        ]),
        "databases",
    )
    .unwrap_err();
    assert!(matches!(err, AnnotationError::DuplicateEnv { .. }));
}

#[test]
fn containers_targeting() {
    let s = spec(&[
        ("db.role", "r"),
        ("db.env-key-dbuser", "U"),
        ("db.containers", "app, sidecar"),
    ]);
    assert!(s.configs[0].targets("app"));
    assert!(!s.configs[0].targets("other"));
    assert!(check_containers(&s, ["app", "sidecar", "x"].into_iter()).is_ok());
    let err = check_containers(&s, ["app"].into_iter()).unwrap_err();
    assert!(err.to_string().contains("sidecar"));
}

#[test]
fn uri_rendering_percent_encodes() {
    let out = render_uri(
        "postgres://@db:5432/app?sslmode=require",
        "v-user",
        "p@ss:w/rd%",
    )
    .unwrap();
    assert_eq!(
        out,
        "postgres://v-user:p%40ss%3Aw%2Frd%25@db:5432/app?sslmode=require"
    );
    let out = render_uri("postgres://{{user}}:{{password}}@db/app", "u", "a b").unwrap();
    assert_eq!(out, "postgres://u:a%20b@db/app");
    let s = spec(&[
        ("db.role", "r"),
        ("db.mode", "URI"),
        ("db.env-key-uri", "DATABASE_URL"),
        ("db.template", "postgres://{{user}}:{{password}}@db/app"),
    ]);
    assert_eq!(s.configs[0].mode, CredentialMode::Uri);
}

#[test]
fn limits_refuse_too_many_dbconfigs_and_oversized_annotations() {
    let limits = Limits {
        max_db_configs: 16,
        max_bytes: 32 * 1024,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for i in 0..16 {
        pairs.push((format!("db{i:02}.role"), "r".into()));
        pairs.push((format!("db{i:02}.env-key-dbuser"), format!("U{i}")));
    }
    pairs.push(("role".into(), "r".into()));
    let to_map = |p: &[(String, String)]| -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.clone()))
            .collect()
    };
    let mut a = to_map(&pairs);
    a.insert("other.example/x".into(), "x".repeat(100_000)); // not ours: not counted
    assert_eq!(check_limits(&a, limits), Ok(()));

    pairs.push(("db16.role".into(), "r".into()));
    let e = check_limits(&to_map(&pairs), limits).unwrap_err();
    assert_eq!(e, AnnotationError::TooManyDbConfigs { count: 17, max: 16 });
    assert!(e.to_string().contains("maxDbConfigsPerPod"), "{e}");

    let big = ann(&[("db.role", "r"), ("db.template", &"x".repeat(40_000))]);
    let e = check_limits(&big, limits).unwrap_err();
    assert!(
        matches!(e, AnnotationError::AnnotationsTooLarge { max: 32768, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("maxAnnotationBytes"), "{e}");
}

proptest! {
    /// The parser never panics, and whatever it accepts satisfies the contract's invariants.
    #[test]
    fn parser_invariants(entries in proptest::collection::btree_map(
        "(db[ab]?|x)?(\\.(role|mode|env-key-dbuser|env-key-dbpassword|env-key-uri|template|containers|zz))?",
        "[ -~]{0,24}",
        0..8,
    )) {
        let a: BTreeMap<String, String> =
            entries.into_iter().map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect();
        if let Ok(PodContract::Databases(s)) = parse(&a, "databases") {
            let names: Vec<&str> = s.configs.iter().map(|c| c.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            prop_assert_eq!(&names, &sorted);
            let mut seen = BTreeSet::new();
            for c in &s.configs {
                prop_assert!(!c.role.is_empty());
                for n in c.env_names() {
                    prop_assert!(valid_env_name(n));
                }
                let own: BTreeSet<&str> = c.env_names().collect();
                for n in own { prop_assert!(seen.insert(n.to_string())); }
                if c.mode == CredentialMode::Uri {
                    prop_assert!(render_uri(c.template.as_deref().unwrap(), "u", "p").is_ok());
                }
            }
        }
    }
}

/// Fuzzing of the annotation grammar with a fixed seed and case budget (short in CI,
/// reproducible): any keys and values under the prefix, including unicode, huge lists and
/// separators; neither the limits nor the parser panic, and whatever passes the limits and the
/// parser stays within the limits.
mod fuzz {
    use super::*;
    use proptest::test_runner::{Config, RngSeed};

    proptest! {
        #![proptest_config(Config {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x616e_6e6f),
            failure_persistence: None,
            ..Config::default()
        })]

        #[test]
        fn limits_and_parser_never_panic(entries in proptest::collection::btree_map(
            "\\PC{0,6}(\\.\\PC{0,12})?",
            "\\PC{0,40}|([A-Z_]{1,4},){0,30}",
            0..40,
        ), max_db in 1usize..8) {
            let a: BTreeMap<String, String> =
                entries.into_iter().map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect();
            let limits = Limits { max_db_configs: max_db, max_bytes: 4096 };
            if check_limits(&a, limits).is_ok() {
                if let Ok(PodContract::Databases(s)) = parse(&a, "databases") {
                    prop_assert!(s.configs.len() <= max_db);
                    let names: Vec<&str> = s.configs.iter().map(|c| c.name.as_str()).collect();
                    let ok = check_containers(&s, names.iter().copied());
                    let _ = ok;
                    for c in &s.configs {
                        if c.mode == CredentialMode::Uri {
                            let _ = render_uri(c.template.as_deref().unwrap_or(""), "u@:/", "p%#?");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn empty_cluster_means_the_default_engine() {
    for empty in ["", "  "] {
        let s = spec(&[
            ("cluster", empty),
            ("db.role", "r"),
            ("db.env-key-dbuser", "U"),
        ]);
        assert_eq!(s.engine, "databases", "cluster {empty:?}");
    }
}
