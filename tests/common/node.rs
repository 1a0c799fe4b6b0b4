//! The local containerd node started by `platform/vdbi-node up` (containerd 2.x with NRI, runc,
//! a local busybox image), driven through CRI by `vdbi-cri`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The running node, from the env file `platform/vdbi-node up` writes.
pub struct Node {
    vars: BTreeMap<String, String>,
}

impl Node {
    /// Panics with the way to start the node when it is not running (tests never skip).
    pub fn get() -> Node {
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

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("node env has no {key}; re-run `platform/vdbi-node up`"))
    }

    /// Runs `vdbi-cri`; `Ok(json)` on success, `Err(stderr)` on failure.
    pub async fn cri(&self, args: &[&str]) -> Result<Value, String> {
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

    pub async fn cri_ok(&self, args: &[&str]) -> Value {
        self.cri(args)
            .await
            .unwrap_or_else(|e| panic!("vdbi-cri {args:?} failed: {e}"))
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
