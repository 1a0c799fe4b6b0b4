//! Readiness that tells the truth about Vault: a probe task asks the VaultSession actor, every
//! few seconds, whether the session is established and sends it one real call (`sys/health`,
//! through the same client, rate limiter and mailbox as every issuing call, under a short
//! deadline). While those fail — no session, Vault sealed, unreachable, or calls that do not come
//! back in time (a wedged client) — for longer than `readinessVaultGrace`, the readiness check
//! `vault-calls` fails, so Kubernetes stops routing admissions to this replica and the operator
//! sees it. Liveness never looks at it: a Vault outage must not restart vdbi.

use crate::actors::vault_session::{IsLoggedIn, ReadHealth, VaultSession};
use crate::actors::ActorHandle;
use crate::health::HealthState;
use slog::{info, warn, Logger};
use std::time::Duration;
use tokio::time::Instant;

/// The readiness check's name on `/readyz`.
pub const CHECK: &str = "vault-calls";

/// How the probe is paced.
#[derive(Clone, Copy, Debug)]
pub struct ProbeTiming {
    /// Failing this long makes the replica unready.
    pub grace: Duration,
    /// Between two probes.
    pub interval: Duration,
    /// The probe's own deadline.
    pub timeout: Duration,
}

impl ProbeTiming {
    /// A probe every `grace / 3` (between 200 ms and 5 s), each bounded by that interval too.
    pub fn for_grace(grace: Duration) -> ProbeTiming {
        let interval = (grace / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
        ProbeTiming {
            grace,
            interval,
            timeout: interval.min(Duration::from_secs(2)),
        }
    }
}

/// Why a readiness probe failed; its Display is the health check's message (no Vault text).
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("the Vault session does not answer")]
    SessionSilent,
    #[error("the Vault session is unavailable ({0})")]
    SessionGone(actix::MailboxError),
    #[error("no Vault session (login failing)")]
    NotLoggedIn,
    #[error("Vault calls do not complete in time")]
    Slow,
    #[error("Vault call failed ({0})")]
    CallFailed(&'static str),
    #[error("Vault is sealed")]
    Sealed,
}

/// One probe: `Ok` when a Vault call went through, else why not.
async fn probe(vault: &ActorHandle<VaultSession>, timeout: Duration) -> Result<(), ProbeFailure> {
    let deadline = Instant::now() + timeout;
    let logged_in = tokio::time::timeout_at(deadline, vault.send(IsLoggedIn))
        .await
        .map_err(|_| ProbeFailure::SessionSilent)?
        .map_err(ProbeFailure::SessionGone)?;
    if !logged_in {
        return Err(ProbeFailure::NotLoggedIn);
    }
    match tokio::time::timeout_at(deadline, vault.call(ReadHealth { deadline })).await {
        Err(_) => Err(ProbeFailure::Slow),
        Ok(Err(e)) => Err(ProbeFailure::CallFailed(
            e.vault().map(|v| v.class()).unwrap_or("no answer"),
        )),
        Ok(Ok(h)) if h.sealed => Err(ProbeFailure::Sealed),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Tracks how long the probe has been failing; pure, for the task and its tests.
#[derive(Debug, Default)]
pub struct Tracker {
    failing_since: Option<Instant>,
}

impl Tracker {
    /// Feeds one probe result; returns whether the replica is ready.
    pub fn observe(&mut self, ok: bool, now: Instant, grace: Duration) -> bool {
        if ok {
            self.failing_since = None;
            return true;
        }
        let since = *self.failing_since.get_or_insert(now);
        now.duration_since(since) < grace
    }
}

/// Declares the check (ready until the first probes say otherwise), before [`probe_loop`] runs.
pub fn declare(health: &HealthState) {
    health.set(CHECK, true, "not probed yet");
}

/// Probes Vault every `timing.interval` and sets the check. Runs until dropped (the caller runs
/// it under supervision).
pub async fn probe_loop(
    vault: ActorHandle<VaultSession>,
    health: HealthState,
    timing: ProbeTiming,
    log: Logger,
) {
    {
        let mut tracker = Tracker::default();
        let mut was_ready = true;
        let mut tick = tokio::time::interval(timing.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let res = probe(&vault, timing.timeout).await;
            let ready = tracker.observe(res.is_ok(), Instant::now(), timing.grace);
            let message = match &res {
                Ok(()) => "Vault calls succeed".to_string(),
                Err(why) if ready => format!("{why}; unready after {:?}", timing.grace),
                Err(why) => format!("{why} for more than {:?}", timing.grace),
            };
            health.set(CHECK, ready, message.clone());
            if ready != was_ready {
                if ready {
                    info!(log, "Vault calls succeed again; ready");
                } else {
                    warn!(log, "cannot make Vault calls; reporting unready"; "why" => &message);
                }
                was_ready = ready;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unready_only_after_the_grace_and_ready_on_first_success() {
        let grace = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut t = Tracker::default();
        assert!(t.observe(true, t0, grace));
        assert!(t.observe(false, t0, grace));
        assert!(t.observe(false, t0 + Duration::from_secs(29), grace));
        assert!(!t.observe(false, t0 + Duration::from_secs(30), grace));
        assert!(t.observe(true, t0 + Duration::from_secs(31), grace));
        assert!(t.observe(false, t0 + Duration::from_secs(32), grace));
    }

    #[test]
    fn timing_follows_the_grace() {
        let t = ProbeTiming::for_grace(Duration::from_secs(30));
        assert_eq!(t.interval, Duration::from_secs(5));
        assert_eq!(t.timeout, Duration::from_secs(2));
        let t = ProbeTiming::for_grace(Duration::from_secs(1));
        assert_eq!(t.interval, Duration::from_secs(1) / 3);
        assert_eq!(t.timeout, t.interval);
    }
}
