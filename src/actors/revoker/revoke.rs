//! Revocation of entries, with retry: every uuid of a pod is revoked concurrently (bounded by
//! `max_concurrent`); a failure is retried with exponential backoff, then parked after
//! [`crate::schedule::REVOKE_MAX_ATTEMPTS`] until the sweep picks it up again
//! ([`revocation_retry`]).

use super::{Revoker, VaultSession};
use crate::actors::error::ActorError;
use crate::actors::pod_index::PodRecord;
use crate::actors::revocation::revoke_recorded;
use crate::actors::supervision::spawn_detached;
use crate::actors::vault_session::{KvGet, Paced};
use crate::actors::ActorHandle;
use crate::schedule::{revocation_retry, RetryStep};
use crate::telemetry::Metrics;
use actix::prelude::*;
use slog::{info, warn, Logger};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Message)]
#[rtype(result = "()")]
struct Done {
    uuid: String,
    ok: bool,
    attempt: u32,
    path: &'static str,
    since: Instant,
}

/// Completion of one pod's cleanup: `vdbi_pod_cleanup_count_success` once every uuid is done,
/// if the pod had entries of this release.
pub(super) struct PodCleanup {
    remaining: AtomicUsize,
    failed: AtomicBool,
    found: AtomicBool,
}

impl Revoker {
    pub(super) fn revoke_pod(
        &mut self,
        rec: &PodRecord,
        path: &'static str,
        since: Instant,
        ctx: &mut Context<Self>,
    ) {
        let ids: Vec<String> = if rec.uuids.is_empty() {
            vec![rec.uid.clone()]
        } else {
            rec.uuids.clone()
        };
        let cleanup = Arc::new(PodCleanup {
            remaining: AtomicUsize::new(ids.len()),
            failed: AtomicBool::new(false),
            found: AtomicBool::new(false),
        });
        for uuid in ids {
            self.start_revoke(uuid, path, since, 0, Some(cleanup.clone()), ctx);
        }
    }

    pub(super) fn start_revoke(
        &mut self,
        uuid: String,
        path: &'static str,
        since: Instant,
        attempt: u32,
        cleanup: Option<Arc<PodCleanup>>,
        ctx: &mut Context<Self>,
    ) {
        if !self.leading || !self.in_flight.insert(uuid.clone()) {
            return;
        }
        let vault = self.vault.clone();
        let metrics = self.metrics.clone();
        let log = self.log.clone();
        let timeout = self.cfg.call_timeout;
        let permits = self.permits.clone();
        let me = ctx.address();
        // A panic must not leave the uuid marked in flight (it would never be revoked again):
        // it counts as a failed attempt, retried like any other.
        let failed = {
            let (me, uuid) = (me.clone(), uuid.clone());
            move || {
                me.do_send(Done {
                    uuid,
                    ok: false,
                    attempt,
                    path,
                    since,
                })
            }
        };
        let (task_log, task_metrics) = (log.clone(), metrics.clone());
        let task = async move {
            let _permit = permits.acquire_owned().await;
            let res = revoke_entry(&vault, &uuid, timeout, &metrics, &log).await;
            let ok = match &res {
                Ok(found) => {
                    if *found {
                        metrics.revocation.revoked_after(path, since.elapsed());
                    }
                    true
                }
                Err(e) => {
                    metrics.revocation.cleanup_failed();
                    warn!(log, "revocation failed; will retry"; "uuid" => &uuid, "error" => %e, "attempt" => attempt + 1);
                    false
                }
            };
            if let Some(c) = cleanup {
                match res {
                    Ok(true) => c.found.store(true, Ordering::SeqCst),
                    Ok(false) => {}
                    Err(_) => c.failed.store(true, Ordering::SeqCst),
                }
                if c.remaining.fetch_sub(1, Ordering::SeqCst) == 1
                    && c.found.load(Ordering::SeqCst)
                    && !c.failed.load(Ordering::SeqCst)
                {
                    metrics.revocation.pod_cleaned_up();
                }
            }
            me.do_send(Done {
                uuid,
                ok,
                attempt,
                path,
                since,
            });
        };
        spawn_detached("revocation", &task_log, &task_metrics, task, failed);
    }
}

/// Revokes one entry: token, lease (if Vault still holds it), then the KV entry. `Ok(false)`
/// when there was nothing to do.
pub async fn revoke_entry(
    vault: &ActorHandle<VaultSession>,
    uuid: &str,
    timeout: Duration,
    metrics: &Metrics,
    log: &Logger,
) -> Result<bool, ActorError> {
    let dl = || tokio::time::Instant::now() + timeout;
    let Some(entry) = vault
        .send(Paced(KvGet {
            uuid: uuid.to_string(),
            deadline: dl(),
        }))
        .await??
    else {
        return Ok(false);
    };
    revoke_recorded(vault, uuid, &entry, dl, metrics, log).await?;
    info!(log, "credentials revoked"; "uuid" => uuid, "namespace" => &entry.namespace, "pod" => &entry.pod_name);
    Ok(true)
}

impl Handler<Done> for Revoker {
    type Result = ();
    fn handle(&mut self, msg: Done, ctx: &mut Context<Self>) {
        self.in_flight.remove(&msg.uuid);
        if msg.ok {
            self.parked.remove(&msg.uuid);
            return;
        }
        let attempt = msg.attempt + 1;
        let delay = match revocation_retry(attempt) {
            RetryStep::RetryAfter(delay) => delay,
            RetryStep::Park(park_for) => {
                // Persistently failing (irrevocable lease? Vault policy?): the entry stays in KV
                // and the sweep tries again later; the other entries are not held up.
                warn!(self.log, "revocation keeps failing; parked"; "uuid" => &msg.uuid,
                    "attempts" => attempt, "retry_in_s" => park_for.as_secs());
                self.parked.insert(msg.uuid, Instant::now() + park_for);
                return;
            }
        };
        ctx.run_later(delay, move |act, ctx| {
            act.start_revoke(msg.uuid, msg.path, msg.since, attempt, None, ctx);
        });
    }
}
