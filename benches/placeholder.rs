//! NRI placeholders: generation (`placeholder::generate`, two per dbConfig at every NRI-mode
//! admission), recognition and substitution in one value (`placeholder::find_all`,
//! `placeholder::substitute`), and on the node the NRI plugin's per-pod mapping
//! (`substitution::plan` + `MappingPlan::resolve`) and per-container substitution
//! (`substitution::container_has_marker` + `substitution::substitute_container`).
//!
//! Run with `cargo bench --bench placeholder`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use vdbi::annotations::render_uri;
use vdbi::{placeholder, substitution};

mod fixtures;

fn generate(c: &mut Criterion) {
    // One 32-byte draw from the OS CSPRNG (getrandom) plus hex encoding.
    c.bench_function("placeholder/generate", |b| b.iter(placeholder::generate));
}

fn single_value(c: &mut Criterion) {
    let (user, pass) = (placeholder::generate(), placeholder::generate());
    // A uri-mode value: both placeholders in the userinfo of a connection URI.
    let uri = render_uri(
        "postgres://@pg1.example.internal:5432/app?sslmode=require",
        &user,
        &pass,
    )
    .unwrap();
    let values = HashMap::from([
        (
            user.clone(),
            "v-kubernetes-app-rw-1-a1B2c3D4e5F6g7H8-1795435200".to_string(),
        ),
        (pass.clone(), "A1b-C2d%40E3f%2FG4h%25I5j1".to_string()),
    ]);
    assert_eq!(placeholder::find_all(&uri), [user.as_str(), pass.as_str()]);
    assert!(!placeholder::substitute(&uri, &values).contains(placeholder::PREFIX));
    let mut group = c.benchmark_group("placeholder/uri_value");
    // `is_placeholder` looks at one 77-byte candidate; the two others scan the whole URI.
    group.throughput(Throughput::Bytes(placeholder::LEN as u64));
    group.bench_function("is_placeholder", |b| {
        b.iter(|| placeholder::is_placeholder(black_box(&user)))
    });
    group.throughput(Throughput::Bytes(uri.len() as u64));
    group.bench_function("find_all", |b| {
        b.iter(|| placeholder::find_all(black_box(&uri)))
    });
    group.bench_function("substitute", |b| {
        b.iter(|| placeholder::substitute(black_box(&uri), &values))
    });
    group.finish();
}

fn nri_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("substitution/plan_and_resolve");
    for n in [1, 5] {
        let spec = fixtures::spec(n);
        let pod = fixtures::admitted_nri_pod(n);
        let creds: Vec<Option<(String, String)>> = fixtures::fake_credentials(n)
            .into_iter()
            .map(|v| Some((v.username, v.password)))
            .collect();
        assert_eq!(substitution::plan(&spec, &pod).resolve(&creds).len(), 2 * n);
        group.bench_function(BenchmarkId::new("dbconfigs", n), |b| {
            b.iter(|| substitution::plan(&spec, black_box(&pod)).resolve(&creds))
        });
    }
    group.finish();
}

fn nri_substitute(c: &mut Criterion) {
    let mut group = c.benchmark_group("substitution/substitute_container");
    // Throughput in env lines: the runtime hands over 50 `KEY=VALUE` lines per container.
    group.throughput(Throughput::Elements(fixtures::RUNTIME_ENV_LINES as u64));
    for n in [1, 5] {
        let pod = fixtures::admitted_nri_pod(n);
        let values = fixtures::resolved_values(n, &pod);
        let env = fixtures::runtime_env(&pod);
        let args = vec!["/app".to_string(), "--listen=:8080".to_string()];
        // Setup checks (not timed): every placeholder line of the container is substituted.
        assert_eq!(values.len(), 2 * n, "two placeholders per dbConfig");
        let with_marker = env
            .iter()
            .filter(|l| l.contains(placeholder::PREFIX))
            .count();
        let out = substitution::substitute_container(&env, &args, &values).unwrap();
        assert!(with_marker > 0 && out.env.len() == with_marker);
        // As `CreateContainer` does it: the cheap marker scan first, then the substitution.
        group.bench_function(BenchmarkId::new("dbconfigs", n), |b| {
            b.iter(|| {
                let env = black_box(&env);
                assert!(substitution::container_has_marker(env, &args));
                substitution::substitute_container(env, &args, &values).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, generate, single_value, nri_plan, nri_substitute);
criterion_main!(benches);
