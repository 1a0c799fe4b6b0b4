//! Process health, fed by the actors and read by the probes.
//!
//! Liveness (`/healthz`, `/live`) only says the process is not wedged: it never depends on Vault,
//! so a Vault outage does not make Kubernetes restart every vdbi pod. Readiness (`/readyz`) is
//! true readiness: every registered check (Vault session logged in, leader election running,
//! webhook certificate loaded, NRI registered…) must pass.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub ready: bool,
    pub message: String,
}

#[derive(Default, Debug)]
struct Inner {
    checks: BTreeMap<String, Check>,
    wedged: Option<String>,
}

/// Shared health state; cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct HealthState {
    inner: Arc<RwLock<Inner>>,
}

impl HealthState {
    pub fn new() -> HealthState {
        HealthState::default()
    }

    /// Declares (or updates) a readiness check.
    pub fn set(&self, name: &str, ready: bool, message: impl Into<String>) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.checks.insert(
            name.to_string(),
            Check {
                ready,
                message: message.into(),
            },
        );
    }

    /// Removes a check (component stopped on purpose).
    pub fn remove(&self, name: &str) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.checks.remove(name);
    }

    /// Marks the process as wedged: liveness fails and Kubernetes restarts it.
    pub fn set_wedged(&self, reason: impl Into<String>) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.wedged = Some(reason.into());
    }

    pub fn is_ready(&self) -> bool {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.checks.values().all(|c| c.ready)
    }

    pub fn check(&self, name: &str) -> Option<Check> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.checks.get(name).cloned()
    }

    pub fn checks(&self) -> BTreeMap<String, Check> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.checks.clone()
    }

    pub fn wedged(&self) -> Option<String> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.wedged.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check() {
        let h = HealthState::new();
        assert!(h.is_ready(), "no checks: ready");
        h.set("vault", false, "logging in");
        h.set("leader-election:renewer", true, "campaigning");
        assert!(!h.is_ready());
        h.set("vault", true, "logged in");
        assert!(h.is_ready());
        assert!(h.wedged().is_none());
    }
}
