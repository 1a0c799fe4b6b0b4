//! An [`NriHandler`] for the stub-level tests (the runtime-side peer, a real containerd): it
//! replaces a placeholder with a secret in the containers' env and records every call. A
//! container named as [`SubstitutingHandler::refused`] is refused with its message, one named
//! `slow` takes 10 s.
//!
//! Used as `#[path = "support/substituting_handler.rs"] mod substituting_handler;` (vdbi's
//! containerd test includes it from `crates/nri/tests/support/`).
#![allow(dead_code)]

use async_trait::async_trait;
use nri::{ContainerInfo, EnvAdjustment, NriError, NriHandler, PodSandboxInfo, RuntimeInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct SubstitutingHandler {
    placeholder: &'static str,
    secret: &'static str,
    /// Only pods carrying `<label>=true` are handled (others: no adjustment); `None`: all.
    pub only_label: Option<&'static str>,
    /// (container name, refusal message).
    pub refused: (&'static str, &'static str),
    pub configured: Mutex<Vec<RuntimeInfo>>,
    pub synced: Mutex<Vec<(Vec<PodSandboxInfo>, Vec<ContainerInfo>)>>,
    pub removed: Mutex<Vec<String>>,
    /// CreateContainer calls received.
    pub creates: AtomicUsize,
    /// How long each substituting CreateContainer took in the handler.
    pub handled: Mutex<Vec<Duration>>,
}

impl SubstitutingHandler {
    /// Handles every pod; refuses containers named `fail`.
    pub fn new(placeholder: &'static str, secret: &'static str) -> SubstitutingHandler {
        SubstitutingHandler {
            placeholder,
            secret,
            only_label: None,
            refused: ("fail", "vault-db-injector: vault unreachable"),
            configured: Mutex::default(),
            synced: Mutex::default(),
            removed: Mutex::default(),
            creates: AtomicUsize::new(0),
            handled: Mutex::default(),
        }
    }
}

#[async_trait]
impl NriHandler for SubstitutingHandler {
    async fn configure(&self, info: RuntimeInfo) -> Result<(), NriError> {
        self.configured.lock().unwrap().push(info);
        Ok(())
    }

    async fn synchronize(
        &self,
        pods: Vec<PodSandboxInfo>,
        containers: Vec<ContainerInfo>,
    ) -> Result<(), NriError> {
        self.synced.lock().unwrap().push((pods, containers));
        Ok(())
    }

    async fn create_container(
        &self,
        pod: PodSandboxInfo,
        container: ContainerInfo,
    ) -> Result<EnvAdjustment, NriError> {
        let started = Instant::now();
        self.creates.fetch_add(1, Ordering::SeqCst);
        if let Some(label) = self.only_label {
            if pod.labels.get(label).map(String::as_str) != Some("true") {
                return Ok(EnvAdjustment::none());
            }
        }
        match container.name.as_str() {
            name if name == self.refused.0 => return Err(NriError::handler(self.refused.1)),
            "slow" => tokio::time::sleep(Duration::from_secs(10)).await,
            _ => {}
        }
        let mut adj = EnvAdjustment::none();
        for kv in &container.env {
            if let Some((key, value)) = kv.split_once('=') {
                if value.contains(self.placeholder) {
                    adj.push(key, value.replace(self.placeholder, self.secret));
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
