//! Patch building: `mutation::build_patch` (env vars into every targeted container, replacing
//! same-name variables in place, plus the `uuid` annotation), alone and followed by the JSON
//! serialisation that goes into the AdmissionReview response; and the whole pure part of one
//! NRI-mode admission chained together.
//!
//! Run with `cargo bench --bench mutation`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use vdbi::annotations::{self, PodContract};
use vdbi::mutation::{self, InjectedValues};
use vdbi::placeholder;

mod fixtures;

fn build_patch(c: &mut Criterion) {
    let mut group = c.benchmark_group("mutation/build_patch");
    for n in [1, 5] {
        let pod = fixtures::pod(n);
        let spec = fixtures::spec(n);
        let uuids = fixtures::uuids(n);
        // Classic/projected mode: real credentials, percent-encoded into the uri-mode URIs.
        let creds = fixtures::fake_credentials(n);
        // Setup check (not timed): one env op per container (all three are targeted) + uuid.
        let ops = mutation::build_patch(&pod, &spec, &creds, &uuids).unwrap();
        assert_eq!(ops.0.len(), 4);
        group.bench_function(BenchmarkId::new("credentials", n), |b| {
            b.iter(|| mutation::build_patch(black_box(&pod), &spec, &creds, &uuids).unwrap())
        });
        // NRI mode: placeholders instead of credentials.
        let phs = fixtures::placeholders(n);
        group.bench_function(BenchmarkId::new("placeholders", n), |b| {
            b.iter(|| mutation::build_patch(black_box(&pod), &spec, &phs, &uuids).unwrap())
        });
        // The patch is sent as JSON (base64 on top) in the AdmissionReview response.
        group.bench_function(BenchmarkId::new("credentials_to_json", n), |b| {
            b.iter(|| {
                let patch = mutation::build_patch(black_box(&pod), &spec, &creds, &uuids).unwrap();
                serde_json::to_vec(&patch).unwrap()
            })
        });
    }
    group.finish();
}

/// Every pure step of one NRI-mode admission, in the order of `actors::admission`: parse the
/// annotations, check the `containers` lists, draw two placeholders per dbConfig, build and
/// serialise the patch. What is left out is I/O (Vault, Kubernetes) and the UUID v1 draw.
fn admission_pure_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("mutation/admission_pure_path");
    for n in [1, 5] {
        let pod = fixtures::pod(n);
        let uuids = fixtures::uuids(n);
        group.bench_function(BenchmarkId::new("dbconfigs", n), |b| {
            b.iter(|| {
                let pod = black_box(&pod);
                let annotations = pod.metadata.annotations.as_ref().unwrap();
                let PodContract::Databases(spec) =
                    annotations::parse(annotations, fixtures::ENGINE).unwrap()
                else {
                    unreachable!("the fixture pod has dbConfigs")
                };
                let names = mutation::container_names(pod);
                annotations::check_containers(&spec, names.iter().map(String::as_str)).unwrap();
                let values: Vec<InjectedValues> = spec
                    .configs
                    .iter()
                    .map(|_| InjectedValues {
                        username: placeholder::generate(),
                        password: placeholder::generate(),
                    })
                    .collect();
                let patch = mutation::build_patch(pod, &spec, &values, &uuids).unwrap();
                serde_json::to_vec(&patch).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, build_patch, admission_pure_path);
criterion_main!(benches);
