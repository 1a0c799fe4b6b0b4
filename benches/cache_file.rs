//! NRI cache persistence: `cache_file::save` (JSON, temporary file 0600, fsync, rename, directory
//! fsync; run after every change of the node's credential cache) and `cache_file::load` (once at
//! plugin start).
//!
//! An entry is one pod with one classic dbConfig: two placeholders (username, password) and their
//! values. The files are written to a temporary directory under the system temp dir (a real disk
//! on most machines, so `save` includes a real fsync) and, when it exists, under `/dev/shm`
//! (tmpfs, where fsync is free: the difference is the cost of durability).
//!
//! Run with `cargo bench --bench cache_file`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use vdbi::cache_file::{self, Loaded, PodValues};
use vdbi::placeholder;

/// A cache of `pods` pods, each with a username and a password placeholder. Values are fake.
fn cache(pods: usize) -> HashMap<String, PodValues> {
    (0..pods)
        .map(|i| {
            let uid = format!("5b0c3f1e-9d2a-4c7b-8e6f-{i:012}");
            let values = PodValues::from([
                (
                    placeholder::generate(),
                    format!("v-kubernetes-app-rw-a1B2c3D4e5F6g7H8-{i}"),
                ),
                (placeholder::generate(), format!("A1b-C2d@E3f/G4h%I5j{i}")),
            ]);
            (uid, values)
        })
        .collect()
}

/// The directories to write into: (label, parent directory).
fn dirs() -> Vec<(&'static str, std::path::PathBuf)> {
    let mut out = vec![("disk", std::env::temp_dir())];
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        out.push(("tmpfs", shm.to_path_buf()));
    }
    out
}

fn save_and_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_file");
    // `save` of 1,000 pods with two fsyncs takes milliseconds: fewer samples keep the run short.
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    for (label, parent) in dirs() {
        let dir = tempfile::tempdir_in(&parent).expect("temporary directory");
        let path = dir.path().join("nri/cache.json");
        for pods in [10, 1_000] {
            let snapshot = cache(pods);
            cache_file::save(&path, &snapshot).expect("first save");
            let bytes = std::fs::metadata(&path).expect("cache file").len();
            group.throughput(Throughput::Bytes(bytes));
            group.bench_function(BenchmarkId::new(format!("save/{label}"), pods), |b| {
                b.iter(|| cache_file::save(&path, black_box(&snapshot)).unwrap())
            });
            group.bench_function(BenchmarkId::new(format!("load/{label}"), pods), |b| {
                b.iter(|| match cache_file::load(black_box(&path)).unwrap() {
                    Loaded::Ok(pods) => pods,
                    _ => unreachable!("the file was just written"),
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, save_and_load);
criterion_main!(benches);
