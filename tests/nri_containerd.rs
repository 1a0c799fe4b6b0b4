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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use vdbi::nri::{
    ContainerInfo, EnvAdjustment, NriError, NriHandler, PodSandboxInfo, ReconnectBackoff,
    RuntimeInfo, Stub, StubConfig,
};

const PLACEHOLDER: &str =
    "__VDBI_PH_5e1f0c2b9a7d4e3f8a6b1c0d2e4f6a8b0c1d3e5f7a9b2c4d6e8f0a1b3c5d7e9f___";
const SECRET: &str = "pg-pass-from-vdbi-e2e";
const LABEL: &str = "vault-db-injector";
const REFUSAL: &str = "vault-db-injector: test refusal (vault unreachable)";

/// Substitutes the placeholder in labelled pods, refuses containers named `refused`, takes 10 s
/// for containers named `slow`.
#[derive(Default)]
struct E2eHandler {
    configured: Mutex<Vec<RuntimeInfo>>,
    removed: Mutex<Vec<String>>,
    handled: Mutex<Vec<Duration>>,
}

#[async_trait]
impl NriHandler for E2eHandler {
    async fn configure(&self, info: RuntimeInfo) -> Result<(), NriError> {
        self.configured.lock().unwrap().push(info);
        Ok(())
    }

    async fn synchronize(
        &self,
        _pods: Vec<PodSandboxInfo>,
        _containers: Vec<ContainerInfo>,
    ) -> Result<(), NriError> {
        Ok(())
    }

    async fn create_container(
        &self,
        pod: PodSandboxInfo,
        container: ContainerInfo,
    ) -> Result<EnvAdjustment, NriError> {
        let started = Instant::now();
        if pod.labels.get(LABEL).map(String::as_str) != Some("true") {
            return Ok(EnvAdjustment::none());
        }
        match container.name.as_str() {
            "refused" => return Err(NriError::handler(REFUSAL)),
            "slow" => tokio::time::sleep(Duration::from_secs(10)).await,
            _ => {}
        }
        let mut adj = EnvAdjustment::none();
        for kv in &container.env {
            if let Some((key, value)) = kv.split_once('=') {
                if value.contains(PLACEHOLDER) {
                    adj.push(key, value.replace(PLACEHOLDER, SECRET));
                }
            }
        }
        self.handled.lock().unwrap().push(started.elapsed());
        Ok(adj)
    }

    async fn remove_pod_sandbox(&self, pod: PodSandboxInfo) -> Result<(), NriError> {
        self.removed.lock().unwrap().push(pod.uid);
        Ok(())
    }
}

/// The running node, from the env file `platform/vdbi-node up` writes.
struct Node {
    vars: BTreeMap<String, String>,
}

impl Node {
    fn get() -> Node {
        let file = std::env::var("VDBI_NODE_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".platform/containerd/env")
            });
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "the local containerd node is not running ({}: {e}); start it with \
                 `platform/vdbi-node up` or run `platform/vdbi-node test`",
                file.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Node { vars }
    }

    fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("node env has no {key}; re-run `platform/vdbi-node up`"))
    }

    /// Runs `vdbi-cri`; `Ok(json)` on success, `Err(stderr)` on failure.
    async fn cri(&self, args: &[&str]) -> Result<Value, String> {
        let output = tokio::process::Command::new(self.var("VDBI_NODE_CRI"))
            .arg("-endpoint")
            .arg(self.var("VDBI_NODE_CRI_ENDPOINT"))
            .args(args)
            .output()
            .await
            .expect("run vdbi-cri");
        if output.status.success() {
            Ok(serde_json::from_slice(&output.stdout).expect("vdbi-cri prints JSON"))
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    async fn cri_ok(&self, args: &[&str]) -> Value {
        self.cri(args)
            .await
            .unwrap_or_else(|e| panic!("vdbi-cri {args:?} failed: {e}"))
    }
}

/// A pod sandbox created through CRI, with the metadata `create` must repeat.
struct Pod {
    id: String,
    name: String,
    uid: String,
}

impl Pod {
    async fn run(node: &Node, labelled: bool) -> Pod {
        let uid = uuid::Uuid::new_v4().to_string();
        let name = format!("e2e-{}", &uid[..8]);
        let label = format!("{LABEL}={labelled}");
        let v = node
            .cri_ok(&[
                "runp",
                "-name",
                &name,
                "-namespace",
                "team-a",
                "-uid",
                &uid,
                "-label",
                &label,
            ])
            .await;
        Pod {
            id: v["id"].as_str().unwrap().to_string(),
            name,
            uid,
        }
    }

    fn create_args<'a>(&'a self, node: &'a Node, name: &'a str, label: &'a str) -> Vec<&'a str> {
        vec![
            "create",
            "-sandbox",
            &self.id,
            "-pod-name",
            &self.name,
            "-pod-namespace",
            "team-a",
            "-pod-uid",
            &self.uid,
            "-pod-label",
            label,
            "-name",
            name,
            "-image",
            node.var("VDBI_NODE_IMAGE"),
        ]
    }

    async fn remove(&self, node: &Node) {
        node.cri_ok(&["stopp", &self.id]).await;
        node.cri_ok(&["rmp", &self.id]).await;
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a labelled container with placeholders and checks what containerd made of it.
async fn create_and_check(node: &Node, pod: &Pod) -> (String, Duration) {
    let label = format!("{LABEL}=true");
    let password = format!("DB_PASSWORD={PLACEHOLDER}");
    let url = format!("DB_URL=postgres://app:{PLACEHOLDER}@db:5432/app");
    let mut args = pod.create_args(node, "app", &label);
    args.extend(["-env", &password, "-env", &url, "-env", "PLAIN=keep"]);
    args.extend(["--", "sleep", "300"]);
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
    let handler = Arc::new(E2eHandler::default());
    let mut config = StubConfig::new("vdbi-e2e", "10");
    config.socket_path = PathBuf::from(node.var("VDBI_NODE_NRI_SOCK"));
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let stub = Arc::new(Stub::new(config, handler.clone(), log).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let plugin = {
        let stub = stub.clone();
        tokio::spawn(async move {
            let mut backoff = ReconnectBackoff::default();
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
    let pod = Pod::run(&node, true).await;
    let mut timings = Vec::new();
    let (id, took) = create_and_check(&node, &pod).await;
    timings.push(took);
    node.cri_ok(&["start", &id]).await;
    let out = node
        .cri_ok(&["exec", &id, "--", "sh", "-c", "echo \"$DB_PASSWORD\""])
        .await;
    assert_eq!(out["stdout"].as_str(), Some(format!("{SECRET}\n").as_str()));

    // 2. A handler error refuses the container (no container with placeholders starts).
    let label = format!("{LABEL}=true");
    let password = format!("DB_PASSWORD={PLACEHOLDER}");
    let mut args = pod.create_args(&node, "refused", &label);
    args.extend(["-env", &password]);
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
    let mut args = pod.create_args(&node, "slow", &label);
    args.extend(["-env", &password]);
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
    let mut args = pod.create_args(&node, "big", &label);
    for e in &big {
        args.extend(["-env", e.as_str()]);
    }
    let created = node.cri_ok(&args).await;
    let big_id = created["id"].as_str().unwrap().to_string();
    let env = strings(&node.cri_ok(&["inspect", &big_id]).await["env"]);
    assert!(env.contains(&format!("BIG_39={}{SECRET}", "v".repeat(1000))));
    assert!(!env.iter().any(|e| e.contains("__VDBI_PH_")));
    node.cri_ok(&["rm", &big_id]).await;

    // 5. An unlabelled pod is left alone (no adjustment: the placeholder stays).
    let plain = Pod::run(&node, false).await;
    let plain_label = format!("{LABEL}=false");
    let mut args = plain.create_args(&node, "app", &plain_label);
    args.extend(["-env", &password]);
    let created = node.cri_ok(&args).await;
    let inspect = node
        .cri_ok(&["inspect", created["id"].as_str().unwrap()])
        .await;
    assert!(strings(&inspect["env"]).contains(&password));

    // 6. Pod removal reaches the handler (RemovePodSandbox on NRI v0.12+, StateChange before).
    node.cri_ok(&["stop", &id]).await;
    node.cri_ok(&["rm", &id]).await;
    pod.remove(&node).await;
    plain.remove(&node).await;
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
    let pod = Pod::run(&node, true).await;
    for _ in 0..5 {
        let (id, took) = create_and_check(&node, &pod).await;
        timings.push(took);
        node.cri_ok(&["rm", &id]).await;
    }
    pod.remove(&node).await;

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
