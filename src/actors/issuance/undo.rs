//! The undo log of one issuance (an admission or an NRI fetch) and the undo itself.
//!
//! Every Vault object an issuance creates is recorded here the moment its call returns. When
//! the issuance fails, or its caller gives up at the deadline while calls are still running, the
//! log is *abandoned*: what it holds is undone, and whatever lands later is refused by
//! [`UndoLog::record`] and undone by the step that created it. The undo has its own patience,
//! not the issuance's deadline: it retries with backoff for [`UNDO_PATIENCE`], tokens first (their
//! DB leases die with them), then the KV entries — an entry is kept while its token could not be
//! revoked, so the revoker's sweep still finds it.

use crate::actors::error::ActorError;
use crate::actors::vault_session::{
    KvDelete, KvDeleteReservation, KvPut, Paced, RevokeOrphan, RevokeSelf, VaultSession,
};
use crate::actors::ActorHandle;
use crate::bookkeeping::{BookkeepingEntry, ReservationKind};
use crate::vault::VaultToken;
use slog::{debug, error, warn, Logger};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant as Deadline;

/// A token an issuance created, revoked if the issuance fails (its DB leases die with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewToken {
    /// Legacy orphan token: `revoke-orphan` with vdbi's session.
    Orphan(VaultToken),
    /// Projected pod token: `revoke-self` with the token itself.
    Pod(VaultToken),
}

impl NewToken {
    pub async fn revoke(
        &self,
        vault: &ActorHandle<VaultSession>,
        deadline: Deadline,
    ) -> Result<(), ActorError> {
        match self {
            NewToken::Orphan(target) => {
                vault
                    .call(Paced(RevokeOrphan {
                        target: target.clone(),
                        deadline,
                    }))
                    .await
            }
            NewToken::Pod(token) => {
                vault
                    .call(Paced(RevokeSelf {
                        token: token.clone(),
                        deadline,
                    }))
                    .await
            }
        }
    }
}

/// Something an issuance created in Vault.
#[derive(Debug)]
pub enum Created {
    /// Legacy orphan token or projected pod token.
    Token(NewToken),
    /// A KV bookkeeping entry written, with what to put back.
    Entry { uuid: String, restore: Restore },
    /// A reservation written (the webhook's, or an NRI fetch attempt's), outside the Go-listed
    /// prefix: deleted.
    Reservation { kind: ReservationKind, key: String },
}

/// What the undo puts back in a KV entry the issuance wrote.
#[derive(Debug)]
pub enum Restore {
    /// The entry did not exist: delete it.
    Delete,
    /// What the entry held.
    Entry(Box<BookkeepingEntry>),
}

/// How exposed a failed issuance left Vault, for a refusal that says what is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// No Vault object was created and no creating call was running.
    Nothing,
    /// Objects were created; they are being revoked.
    Revoking,
    /// Creating calls were still running: what they create is revoked when they return.
    InFlight,
}

impl Exposure {
    /// The clause a refusal ends with.
    pub fn phrase(self) -> &'static str {
        match self {
            Exposure::Nothing => "nothing was issued",
            Exposure::Revoking => "what was issued for it is being revoked",
            Exposure::InFlight => {
                "Vault calls were still running: whatever they issue is revoked as they complete"
            }
        }
    }
}

#[derive(Default)]
struct State {
    abandoned: bool,
    created: Vec<Created>,
    /// Calls that may create a Vault object, running now.
    creating: usize,
}

/// What one issuance created, until it succeeds or is abandoned.
#[derive(Default)]
pub struct UndoLog {
    state: Mutex<State>,
    /// Woken when the last creating call ends.
    idle: tokio::sync::Notify,
}

/// Counts a creating call while it runs (see [`UndoLog::creating`]).
struct CreatingGuard<'a>(&'a UndoLog);

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.creating -= 1;
        if g.creating == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

impl UndoLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a call that may create a Vault object (token, lease, KV entry), counted while it
    /// runs so that an abandonment meanwhile is worded truthfully.
    pub async fn creating<F: Future>(&self, call: F) -> F::Output {
        self.lock().creating += 1;
        let _guard = CreatingGuard(self);
        call.await
    }

    /// Records `c`; gives it back if the issuance was already abandoned (the caller undoes it).
    pub fn record(&self, c: Created) -> Result<(), Created> {
        let mut g = self.lock();
        if g.abandoned {
            return Err(c);
        }
        g.created.push(c);
        Ok(())
    }

    /// Marks the issuance failed and takes everything created so far.
    pub fn abandon(&self) -> (Vec<Created>, Exposure) {
        let mut g = self.lock();
        g.abandoned = true;
        let created = std::mem::take(&mut g.created);
        let exposure = if !created.is_empty() {
            Exposure::Revoking
        } else if g.creating > 0 {
            Exposure::InFlight
        } else {
            Exposure::Nothing
        };
        (created, exposure)
    }

    /// Waits until no creating call runs any more, at most until `limit`. An abandoned issuance's
    /// undo waits for this before revoking its tokens: a credentials read still running with a
    /// token would otherwise register its lease after the token's revocation, and Vault would
    /// keep that lease (no longer tied to any token) until its TTL.
    pub async fn settled(&self, limit: Deadline) {
        loop {
            let idle = self.idle.notified();
            if self.lock().creating == 0 {
                return;
            }
            if tokio::time::timeout_at(limit, idle).await.is_err() {
                return;
            }
        }
    }

    /// Forgets a token the issuance revoked itself.
    pub fn forget_token(&self, token: &VaultToken) {
        self.lock().created.retain(
            |c| !matches!(c, Created::Token(NewToken::Pod(t) | NewToken::Orphan(t)) if t == token),
        );
    }
}

/// How long an undo keeps retrying before it leaves the rest to the revoker's sweep (entries)
/// and to the provisional TTL (unconfirmed orphan tokens).
pub const UNDO_PATIENCE: Duration = Duration::from_secs(15 * 60);
/// Deadline of each undo call.
const UNDO_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One undo step, retried with backoff (0.5 s doubling to 30 s) until it succeeds or
/// [`UNDO_PATIENCE`] has passed. Every undo call goes through here, the one place that sets
/// the deadline of undo work; its calls take the session's paced lane (see [`undo`]).
async fn undo_step<F, Fut>(what: &str, log: &Logger, mut call: F) -> bool
where
    F: FnMut(Deadline) -> Fut,
    Fut: Future<Output = Result<(), ActorError>>,
{
    let give_up = Deadline::now() + UNDO_PATIENCE;
    let mut delay = Duration::from_millis(500);
    for attempt in 1u32.. {
        match call(Deadline::now() + UNDO_CALL_TIMEOUT).await {
            Ok(()) => return true,
            Err(e) => {
                if Deadline::now() + delay >= give_up {
                    error!(log, "undo gave up"; "step" => what, "error" => %e,
                        "attempts" => attempt);
                    return false;
                }
                warn!(log, "undo step failed; retrying"; "step" => what, "error" => %e,
                    "attempt" => attempt, "retry_in_ms" => delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    false
}

/// A KV record the undo puts back or deletes.
enum Record {
    Entry(String, Restore),
    Reservation(ReservationKind, String),
}

/// Undoes what an issuance created: tokens first (concurrently; their DB leases die with them),
/// then the KV entries are put back (deleted or restored) and reservations deleted — unless a
/// token could not be revoked, in which case its entry stays so the revoker's sweep finds it.
/// Returns whether everything was undone.
///
/// Undo is work nobody waits for: its calls take the session's paced lane (`Paced`, as the
/// renewer's and revoker's), so they never take Vault capacity from new admissions, and no
/// admission's deadline bounds them ([`UNDO_PATIENCE`] does).
pub async fn undo(vault: &ActorHandle<VaultSession>, created: Vec<Created>, log: &Logger) -> bool {
    if created.is_empty() {
        return true;
    }
    let (mut tokens, mut records) = (Vec::new(), Vec::new());
    for c in created {
        match c {
            Created::Token(t) => tokens.push(t),
            Created::Entry { uuid, restore } => records.push(Record::Entry(uuid, restore)),
            Created::Reservation { kind, key } => records.push(Record::Reservation(kind, key)),
        }
    }
    let revoked = futures::future::join_all(tokens.iter().map(|t| {
        undo_step("revoking a token", log, move |deadline| {
            t.revoke(vault, deadline)
        })
    }))
    .await;
    if revoked.iter().any(|ok| !ok) {
        warn!(log, "a failed issuance's token could not be revoked; its entry is kept for the revoker's sweep");
        return false;
    }
    let mut all = true;
    for record in &records {
        let what = match record {
            Record::Entry(..) => "restoring a bookkeeping entry",
            Record::Reservation(..) => "deleting a reservation",
        };
        let ok = undo_step(what, log, |deadline| {
            let vault = vault.clone();
            async move {
                match record {
                    Record::Reservation(kind, key) => {
                        let (kind, key) = (*kind, key.clone());
                        let delete = KvDeleteReservation {
                            kind,
                            key,
                            deadline,
                        };
                        vault.call(Paced(delete)).await
                    }
                    Record::Entry(uuid, Restore::Entry(entry)) => {
                        let put = KvPut {
                            uuid: uuid.clone(),
                            entry: (**entry).clone(),
                            deadline,
                        };
                        vault.call(Paced(put)).await
                    }
                    Record::Entry(uuid, Restore::Delete) => {
                        let uuid = uuid.clone();
                        vault.call(Paced(KvDelete { uuid, deadline })).await
                    }
                }
            }
        })
        .await;
        all &= ok;
    }
    debug!(log, "failed issuance undone"; "complete" => all);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Created {
        Created::Token(NewToken::Orphan(VaultToken::new(s.to_string())))
    }

    #[tokio::test]
    async fn abandonment_says_what_is_true() {
        let log = UndoLog::default();
        assert_eq!(log.abandon().1, Exposure::Nothing);

        let log = UndoLog::default();
        log.record(tok("a")).unwrap();
        let (created, exposure) = log.abandon();
        assert_eq!((created.len(), exposure), (1, Exposure::Revoking));
        // late arrivals are handed back to their creator
        assert!(log.record(tok("b")).is_err());

        let log = std::sync::Arc::new(UndoLog::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let l2 = log.clone();
        let call = tokio::spawn(async move { l2.creating(async { rx.await.ok() }).await });
        tokio::task::yield_now().await;
        while log.lock().creating == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(log.abandon().1, Exposure::InFlight);
        let l3 = log.clone();
        let waiter =
            tokio::spawn(
                async move { l3.settled(Deadline::now() + Duration::from_secs(60)).await },
            );
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "settled while a call still runs");
        tx.send(()).unwrap();
        call.await.unwrap();
        assert_eq!(log.lock().creating, 0);
        waiter.await.unwrap();
    }

    #[test]
    fn forgotten_tokens_are_not_undone() {
        let log = UndoLog::default();
        log.record(tok("a")).unwrap();
        log.record(tok("b")).unwrap();
        log.forget_token(&VaultToken::new("a".to_string()));
        let (created, _) = log.abandon();
        assert_eq!(created.len(), 1);
    }
}
