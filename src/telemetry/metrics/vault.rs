//! vdbi's own Vault session and every Vault call it makes.

use super::families::{Families, LATENCY_BUCKETS};
use prometheus::{Counter, HistogramVec, IntGauge};
use std::time::Duration;

/// How a Vault call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Error,
    Timeout,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Timeout => "timeout",
        }
    }
}

#[derive(Clone)]
pub struct VaultMetrics {
    logins: Counter,
    login_failures: Counter,
    ready: IntGauge,
    requests: HistogramVec,
}

impl VaultMetrics {
    pub(super) fn register(f: &mut Families) -> VaultMetrics {
        VaultMetrics {
            logins: f.counter(
                "vdbi_connect_vault_count_success",
                "Successful logins of vdbi's own Vault session",
            ),
            login_failures: f.counter(
                "vdbi_connect_vault_count_error",
                "Failed logins of vdbi's own Vault session",
            ),
            ready: f.int_gauge(
                "vdbi_vault_session_ready",
                "1 while vdbi's own Vault session is logged in",
            ),
            requests: f.histogram_vec(
                "vdbi_vault_request_duration_seconds",
                "Vault call latency",
                &["operation", "outcome"],
                LATENCY_BUCKETS,
            ),
        }
    }

    /// The session logged in: it is ready.
    pub fn logged_in(&self) {
        self.logins.inc();
        self.ready.set(1);
    }

    /// A login of the session failed: it is not ready.
    pub fn login_failed(&self) {
        self.login_failures.inc();
        self.ready.set(0);
    }

    /// The session lost its login (expired, revoked, shut down).
    pub fn session_lost(&self) {
        self.ready.set(0);
    }

    /// One Vault call `operation` ended after `took`.
    pub fn call(&self, operation: &str, outcome: CallOutcome, took: Duration) {
        self.requests
            .with_label_values(&[operation, outcome.as_str()])
            .observe(took.as_secs_f64());
    }
}
