//! The NRI stub against a real containerd 2.x (NRI enabled) started by `platform/vdbi-node up`,
//! with pods and containers created through CRI by `vdbi-cri`.
//!
//! Proves, end to end: the plugin registers with containerd; a container created with a
//! placeholder in its env gets the real value in its OCI spec and process while the CRI request
//! (the pod spec) keeps the placeholder; a handler error makes CRI CreateContainer fail; pod
//! removal reaches the handler; after a containerd restart the plugin reconnects by itself.
//!
//! Needs the node: run `platform/vdbi-node test` (or `up`, then `cargo test --test
//! nri_containerd`). Without it the test panics with that instruction; it never passes silently.

use vdbi_testkit::node;
// Shared with the `nri` crate's own wire tests.
#[path = "../crates/nri/tests/support/substituting_handler.rs"]
mod substituting_handler;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node::{strings, Node, Sandbox};
use nri::{ReconnectBackoff, Stub, StubConfig};
use substituting_handler::SubstitutingHandler;
use vdbi::config::NRI_RECONNECT_SCHEDULE;

const PLACEHOLDER: &str =
    "__VDBI_PH_5e1f0c2b9a7d4e3f8a6b1c0d2e4f6a8b0c1d3e5f7a9b2c4d6e8f0a1b3c5d7e9f___";
const SECRET: &str = "pg-pass-from-vdbi-e2e";
const LABEL: &str = "vault-db-injector";
const REFUSAL: &str = "vault-db-injector: test refusal (vault unreachable)";

/// A sandbox `team-a/e2e-…` labelled `vault-db-injector=<labelled>`.
async fn run_pod(node: &Node, labelled: bool) -> Sandbox {
    let uid = uuid::Uuid::new_v4().to_string();
    let name = format!("e2e-{}", &uid[..8]);
    Sandbox::run(node, &name, "team-a", &uid, &format!("{LABEL}={labelled}")).await
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a labelled container with placeholders and checks what containerd made of it.
async fn create_and_check(node: &Node, pod: &Sandbox) -> (String, Duration) {
    let password = format!("DB_PASSWORD={PLACEHOLDER}");
    let url = format!("DB_URL=postgres://app:{PLACEHOLDER}@db:5432/app");
    let mut args = pod.create_args(node, "app", &[&password, &url, "PLAIN=keep"]);
    args.extend(["--", "sleep", "300"].map(String::from));
    let started = Instant::now();
    let created = node.cri_ok(&args).await;
    let took = started.elapsed();
    let id = created["id"].as_str().unwrap().to_string();

    let inspect = node.cri_ok(&["inspect", &id]).await;
    let env = strings(&inspect["env"]);
    assert!(env.contains(&format!("DB_PASSWORD={SECRET}")), "{env:?}");
    assert!(
        env.contains(&format!("DB_URL=postgres://app:{SECRET}@db:5432/app")),
        "{env:?}"
    );
    assert!(env.contains(&"PLAIN=keep".to_string()), "{env:?}");
    assert!(!env.iter().any(|e| e.contains("__VDBI_PH_")), "{env:?}");
    // The CRI request — what the pod spec carries — still holds only the placeholder.
    let cri_env = strings(&inspect["criEnv"]);
    assert!(cri_env.contains(&password), "{cri_env:?}");
    assert!(!cri_env.iter().any(|e| e.contains(SECRET)), "{cri_env:?}");
    (id, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_become_credentials_only_inside_the_container() {
    let node = Node::get();
    // Substitutes in labelled pods only, refuses containers named `refused`.
    let mut handler = SubstitutingHandler::new(PLACEHOLDER, SECRET);
    handler.only_label = Some(LABEL);
    handler.refused = ("refused", REFUSAL);
    let handler = Arc::new(handler);
    let mut config = StubConfig::new("vdbi-e2e", "10");
    config.socket_path = PathBuf::from(node.var("VDBI_NODE_NRI_SOCK"));
    let stub = Arc::new(Stub::new(config, handler.clone()).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let plugin = {
        let stub = stub.clone();
        tokio::spawn(async move {
            let mut backoff = ReconnectBackoff::new(NRI_RECONNECT_SCHEDULE.to_vec());
            stub.run(&mut backoff, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };

    // Registration, Configure (with containerd's identity and timeout), Synchronize.
    wait_for("Configure from containerd", Duration::from_secs(10), || {
        !handler.configured.lock().unwrap().is_empty()
    })
    .await;
    let info = handler.configured.lock().unwrap()[0].clone();
    eprintln!(
        "configured by {} {} (NRI {:?}), request timeout {:?}",
        info.runtime_name, info.runtime_version, info.nri_version, info.request_timeout
    );
    assert_eq!(info.runtime_name, "containerd");
    assert_eq!(
        info.runtime_version,
        node.var("VDBI_NODE_CONTAINERD_VERSION")
    );
    assert_eq!(
        info.request_timeout
            .map(|d| format!("{}s", d.as_secs()))
            .as_deref(),
        Some(node.var("VDBI_NODE_NRI_REQUEST_TIMEOUT"))
    );

    // 1. Substitution in the OCI spec, and in the running process.
    let pod = run_pod(&node, true).await;
    let mut timings = Vec::new();
    let (id, took) = create_and_check(&node, &pod).await;
    timings.push(took);
    node.cri_ok(&["start", &id]).await;
    let out = node
        .cri_ok(&["exec", &id, "--", "sh", "-c", "echo \"$DB_PASSWORD\""])
        .await;
    assert_eq!(out["stdout"].as_str(), Some(format!("{SECRET}\n").as_str()));

    // 2. A handler error refuses the container (no container with placeholders starts).
    let password = format!("DB_PASSWORD={PLACEHOLDER}");
    let args = pod.create_args(&node, "refused", &[&password]);
    let err = node
        .cri(&args)
        .await
        .expect_err("CreateContainer must fail");
    eprintln!("refused as expected: {}", err.trim());
    assert!(err.contains("CreateContainer"), "{err}");
    assert!(err.contains(REFUSAL), "{err}");

    // 3. A handler slower than containerd's request timeout: the stub answers with an error at
    //    0.75 × the timeout, so creation fails (closed) instead of containerd dropping the plugin
    //    and creating the container with placeholders (open). The connection survives.
    let started = Instant::now();
    let args = pod.create_args(&node, "slow", &[&password]);
    let err = node
        .cri(&args)
        .await
        .expect_err("slow handler must fail closed");
    eprintln!("slow handler after {:?}: {}", started.elapsed(), err.trim());
    assert!(err.contains("CreateContainer timed out"), "{err}");
    assert_eq!(
        handler.configured.lock().unwrap().len(),
        1,
        "plugin was not dropped"
    );

    // 4. Large messages both ways (~40 KB request and reply) over containerd's Go mux.
    let big: Vec<String> = (0..40)
        .map(|i| format!("BIG_{i}={}{PLACEHOLDER}", "v".repeat(1000)))
        .collect();
    let args = pod.create_args(&node, "big", &big);
    let created = node.cri_ok(&args).await;
    let big_id = created["id"].as_str().unwrap().to_string();
    let env = strings(&node.cri_ok(&["inspect", &big_id]).await["env"]);
    assert!(env.contains(&format!("BIG_39={}{SECRET}", "v".repeat(1000))));
    assert!(!env.iter().any(|e| e.contains("__VDBI_PH_")));
    node.cri_ok(&["rm", &big_id]).await;

    // 5. An unlabelled pod is left alone (no adjustment: the placeholder stays).
    let plain = run_pod(&node, false).await;
    let args = plain.create_args(&node, "app", &[&password]);
    let created = node.cri_ok(&args).await;
    let inspect = node
        .cri_ok(&["inspect", created["id"].as_str().unwrap()])
        .await;
    assert!(strings(&inspect["env"]).contains(&password));

    // 6. Pod removal reaches the handler (RemovePodSandbox on NRI v0.12+, StateChange before).
    node.cri_ok(&["stop", &id]).await;
    node.cri_ok(&["rm", &id]).await;
    pod.remove(&node).await.expect("sandbox removed");
    plain.remove(&node).await.expect("sandbox removed");
    wait_for("RemovePodSandbox", Duration::from_secs(5), || {
        handler.removed.lock().unwrap().contains(&pod.uid)
    })
    .await;

    // 7. containerd restarts: the session ends, the stub reconnects and serves again.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("platform/vdbi-node");
    let restarted = tokio::process::Command::new(&script)
        .arg("restart")
        .status()
        .await
        .expect("run platform/vdbi-node restart");
    assert!(restarted.success(), "containerd restart failed");
    wait_for(
        "re-registration after restart",
        Duration::from_secs(20),
        || handler.configured.lock().unwrap().len() >= 2,
    )
    .await;
    let pod = run_pod(&node, true).await;
    for _ in 0..5 {
        let (id, took) = create_and_check(&node, &pod).await;
        timings.push(took);
        node.cri_ok(&["rm", &id]).await;
    }
    pod.remove(&node).await.expect("sandbox removed");

    let handled = handler.handled.lock().unwrap().clone();
    eprintln!(
        "CRI CreateContainer wall time incl. vdbi-cri process and NRI round trip: {timings:?}; \
         handler time per NRI CreateContainer: {handled:?}"
    );

    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), plugin)
        .await
        .expect("plugin stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
