//! The local containerd node started by `platform/vdbi-node up` (containerd 2.x with NRI, runc,
//! a local busybox image), driven through CRI by `vdbi-cri`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Debug;

/// The running node, from the env file `platform/vdbi-node up` writes.
pub struct Node {
    vars: BTreeMap<String, String>,
}

impl Node {
    /// Panics with the way to start the node when it is not running (tests never skip).
    pub fn get() -> Node {
        let vars = crate::env_file::EnvFile::load(
            crate::env_file::EnvFile::locate("VDBI_NODE_ENV", ".platform/containerd/env"),
            "the local containerd node",
            "start it with `platform/vdbi-node up` or run `platform/vdbi-node test`",
        )
        .vars;
        Node { vars }
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("node env has no {key}; re-run `platform/vdbi-node up`"))
    }

    /// Runs `vdbi-cri`; `Ok(json)` on success, `Err(stderr)` on failure.
    pub async fn cri<S: AsRef<OsStr> + Debug>(&self, args: &[S]) -> Result<Value, String> {
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

    pub async fn cri_ok<S: AsRef<OsStr> + Debug>(&self, args: &[S]) -> Value {
        self.cri(args)
            .await
            .unwrap_or_else(|e| panic!("vdbi-cri {args:?} failed: {e}"))
    }
}

/// A pod sandbox created through CRI (`vdbi-cri runp`), as the kubelet creates one, with what
/// `vdbi-cri create` must repeat for its containers.
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `key=value`, the sandbox's one label.
    pub label: String,
}

impl Sandbox {
    pub async fn run(node: &Node, name: &str, namespace: &str, uid: &str, label: &str) -> Sandbox {
        let v = node
            .cri_ok(&[
                "runp",
                "-name",
                name,
                "-namespace",
                namespace,
                "-uid",
                uid,
                "-label",
                label,
            ])
            .await;
        Sandbox {
            id: v["id"].as_str().unwrap().to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: uid.to_string(),
            label: label.to_string(),
        }
    }

    /// `vdbi-cri create` arguments for a container of this sandbox with `env` (`K=V` lines); a
    /// command goes after `--`.
    pub fn create_args(
        &self,
        node: &Node,
        container: &str,
        env: &[impl AsRef<str>],
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "create",
            "-sandbox",
            &self.id,
            "-pod-name",
            &self.name,
            "-pod-namespace",
            &self.namespace,
            "-pod-uid",
            &self.uid,
            "-pod-label",
            &self.label,
            "-name",
            container,
            "-image",
            node.var("VDBI_NODE_IMAGE"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for e in env {
            args.push("-env".into());
            args.push(e.as_ref().to_string());
        }
        args
    }

    /// Stops and removes the sandbox (both are tried); the first failure.
    pub async fn remove(&self, node: &Node) -> Result<(), String> {
        let stopped = node.cri(&["stopp", &self.id]).await;
        let removed = node.cri(&["rmp", &self.id]).await;
        stopped.and(removed).map(drop)
    }
}

/// `["a", "b"]` from a JSON array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}
