//! The process itself: actor restarts, task panics, certificate reloads, error reports.

use super::families::Families;
use prometheus::{Counter, CounterVec};

#[derive(Clone)]
pub struct ProcessMetrics {
    restarts: CounterVec,
    task_panics: CounterVec,
    cert_reloads: CounterVec,
    sentry: SentryEvents,
}

/// `vdbi_sentry_events_total{result}`: the error reporter's outcomes.
#[derive(Clone)]
pub struct SentryEvents(CounterVec);

impl SentryEvents {
    /// Every outcome the reporter counts.
    pub const RESULTS: [&'static str; 3] = ["sent", "failed", "dropped"];

    /// One event `sent`, `failed` or `dropped`.
    pub fn count(&self, result: &str) {
        self.0.with_label_values(&[result]).inc();
    }

    /// Creates every outcome's series at 0, so they are scrapeable before the first event.
    pub fn init(&self) {
        for r in Self::RESULTS {
            self.0.with_label_values(&[r]);
        }
    }
}

impl ProcessMetrics {
    pub(super) fn register(f: &mut Families) -> ProcessMetrics {
        ProcessMetrics {
            restarts: f.counter_vec(
                "vdbi_actor_restarts_total",
                "Supervisor restarts of an actor",
                &["actor"],
            ),
            task_panics: f.counter_vec(
                "vdbi_task_panics_total",
                "Panics of one-shot background tasks (a revocation, an undo, a token revoke)",
                &["task"],
            ),
            cert_reloads: f.counter_vec(
                "vdbi_webhook_certificate_reloads_total",
                "Webhook certificate reloads",
                &["result"],
            ),
            sentry: SentryEvents(f.counter_vec(
                "vdbi_sentry_events_total",
                "Sentry events by outcome (sent, failed, dropped)",
                &["result"],
            )),
        }
    }

    /// The restart counter of the actor `name` (kept by its supervisor).
    pub fn restarts_of(&self, name: &str) -> Counter {
        self.restarts.with_label_values(&[name])
    }

    /// A one-shot task `task` (a name from the code, never from a request) panicked.
    pub fn task_panicked(&self, task: &'static str) {
        self.task_panics.with_label_values(&[task]).inc();
    }

    /// A webhook certificate or client CA reload, successful or not.
    pub fn cert_reload(&self, ok: bool) {
        self.cert_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The counter the error reporter counts its events in.
    pub fn sentry_events(&self) -> SentryEvents {
        self.sentry.clone()
    }
}
