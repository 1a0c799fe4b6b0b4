//! Annotation parsing: `annotations::parse` (the pod contract, read at every admission and again by
//! the NRI plugin for every pod it resolves) and `annotations::check_containers`.
//!
//! Run with `cargo bench --bench annotations`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use vdbi::{annotations, mutation};

mod fixtures;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("annotations/parse");
    for n in [1, 5] {
        let a = fixtures::pod_annotations(n);
        group.bench_with_input(BenchmarkId::new("dbconfigs", n), &a, |b, a| {
            b.iter(|| annotations::parse(black_box(a), fixtures::ENGINE).unwrap())
        });
    }
    group.finish();
}

fn check_containers(c: &mut Criterion) {
    let mut group = c.benchmark_group("annotations/check_containers");
    for n in [1, 5] {
        let spec = fixtures::spec(n);
        let pod = fixtures::pod(n);
        // As the webhook does it: list the pod's containers, then check the `containers` lists.
        group.bench_function(BenchmarkId::new("dbconfigs", n), |b| {
            b.iter(|| {
                let names = mutation::container_names(black_box(&pod));
                annotations::check_containers(&spec, names.iter().map(String::as_str)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, check_containers);
criterion_main!(benches);
