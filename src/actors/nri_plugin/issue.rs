//! The fetch proper (compat §3.4): the live pod and its annotations, then per dbConfig the
//! issuing steps of the shared issuance module, every created thing recorded for undo.

use super::resolve::PodRef;
use super::{Failure, FailureReason, NriCore};
use crate::actors::error::ActorError;
use crate::actors::issuance::{
    pod_limits, reservations, undo, Created, IssueError, Issuer, NewToken, Refusal, Restore,
    Subject, UndoLog,
};
use crate::actors::vault_session::{KvGet, RevokeOrphan, RevokeSelf};
use crate::annotations::{self, DbConfig, PodContract, PodDbSpec};
use crate::bookkeeping::{self, BookkeepingEntry, Reservation, ReservationKind};
use crate::cache_file::PodValues;
use crate::k8s::{self, PodBinding};
use crate::substitution as nri_mapping;
use crate::telemetry::metrics::SlotUser;
use crate::telemetry::ExternalClock;
use crate::vault::VaultToken;
use slog::{warn, Logger};
use tokio::time::Instant as Deadline;

/// What the API says about the pod (the trust anchor).
struct PodFacts {
    namespace: String,
    name: String,
    uid: String,
    service_account: String,
    node_name: String,
}

/// What one dbConfig yields.
struct Issued {
    username: String,
    password: String,
    /// Projected: the key of this attempt's record of its login, completed once the entry is.
    attempt: Option<String>,
}

impl NriCore {
    /// The fetch proper (compat §3.4): live pod, UID check, annotations, mapping plan, then the
    /// dbConfigs that have placeholders, concurrently.
    pub(super) async fn fetch(
        &self,
        pod: &PodRef,
        deadline: Deadline,
        undo_log: &UndoLog,
    ) -> Result<PodValues, Failure> {
        let cfg = self.config();
        let api_pod = tokio::time::timeout_at(
            deadline,
            k8s::get_pod(&self.deps.kube, &pod.namespace, &pod.name),
        )
        .await
        .map_err(|_| Failure::fetch("reading the pod from the apiserver timed out"))?
        .map_err(|e| {
            Failure::fetch(format!(
                "reading pod {}/{} from the apiserver: {e}",
                pod.namespace, pod.name
            ))
        })?
        .ok_or_else(|| {
            Failure::fetch(format!(
                "pod {}/{} does not exist in the apiserver",
                pod.namespace, pod.name
            ))
        })?;
        let api_uid = api_pod.metadata.uid.clone().unwrap_or_default();
        if api_uid != pod.uid {
            return Err(Failure::fetch(format!(
                "pod {}/{} has UID {api_uid:?} in the apiserver but {:?} in the runtime: refusing (pod name reused?)",
                pod.namespace, pod.name, pod.uid
            )));
        }
        let annotations = api_pod.metadata.annotations.clone().unwrap_or_default();
        // Bounded work per pod, as the webhook: refused before parsing and before any Vault call.
        within_limits(cfg, &annotations)?;
        let spec = match annotations::parse(&annotations, &cfg.default_engine) {
            Ok(PodContract::Databases(s)) => s,
            Ok(PodContract::NoDatabases { .. }) => return Err(Failure::fetch(
                "the pod has placeholders but no db-creds-injector.numberly.io/<db>.* annotation",
            )),
            Ok(PodContract::LegacyV1) => {
                return Err(Failure::fetch(
                    "the pod carries a v1 revoke-ttl annotation: not handled in NRI mode",
                ))
            }
            Err(e) => return Err(Failure::fetch(format!("pod annotations: {e}"))),
        };
        let plan = nri_mapping::plan(&spec, &api_pod);
        if plan.is_empty() {
            return Err(Failure {
                reason: FailureReason::EmptyMapping,
                message: "no env var named by the dbConfig annotations holds a placeholder in the pod spec".into(),
            });
        }
        let pod_spec = api_pod.spec.as_ref();
        let service_account = pod_spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty());
        let service_account = match (service_account, cfg.use_projected_sa) {
            (Some(sa), _) => sa,
            (None, false) => "default".to_string(),
            (None, true) => {
                return Err(Failure::fetch(
                    "the pod has no serviceAccountName: projected mode needs one",
                ))
            }
        };
        let node_name = pod_spec
            .and_then(|s| s.node_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| cfg.node_name.clone());
        let facts = PodFacts {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            service_account,
            node_name,
        };
        let keys = entry_keys(&spec, &pod.uid)?;
        let clock = ExternalClock::new();
        // One owner per fetch: the pod's dbConfigs share its per-pod bound of issuance slots.
        let owner = self
            .deps
            .slots
            .owner(plan.dbs.iter().filter(|d| !d.is_empty()).count(), deadline);

        let jobs = spec
            .configs
            .iter()
            .enumerate()
            .filter(|(i, _)| !plan.dbs[*i].is_empty())
            .map(|(i, db)| {
                let key = &keys[i];
                let (spec, facts, clock) = (&spec, &facts, &clock);
                async move {
                    let slot = self.deps.slots.acquire(owner, SlotUser::Nri);
                    let Ok(_slot) = tokio::time::timeout_at(deadline, slot).await else {
                        return (
                            i,
                            Err(Failure::fetch(
                                "no issuance slot free before the fetch's deadline",
                            )),
                        );
                    };
                    (
                        i,
                        self.issue_one(spec, db, key, facts, deadline, clock, undo_log)
                            .await,
                    )
                }
            });
        let mut creds = vec![None; spec.configs.len()];
        let (mut completed, mut attempts) = (Vec::new(), Vec::new());
        for (i, issued) in futures::future::join_all(jobs).await {
            let issued = issued?;
            completed.push(keys[i].clone());
            creds[i] = Some((issued.username, issued.password));
            attempts.extend(issued.attempt);
        }
        // Every entry now holds a token and a lease: the webhook's reservations and this
        // fetch's attempt records are done.
        let (vault, log) = (&self.deps.vault, &self.deps.log);
        reservations::complete(vault, ReservationKind::Uuid, completed, log);
        reservations::complete(vault, ReservationKind::Attempt, attempts, log);
        Ok(plan.resolve(&creds))
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue_one(
        &self,
        spec: &PodDbSpec,
        db: &DbConfig,
        uuid: &str,
        pod: &PodFacts,
        deadline: Deadline,
        clock: &ExternalClock,
        undo_log: &UndoLog,
    ) -> Result<Issued, Failure> {
        let cfg = self.config();
        let issuer = Issuer::new(cfg, &self.deps.vault, &self.deps.metrics, clock, deadline);
        let who = Subject::new(&pod.namespace, &pod.service_account);
        let failure = |e| issue_failure(db, e, &self.deps.log);
        let mut entry = BookkeepingEntry::reservation(
            &pod.namespace,
            &pod.service_account,
            &pod.name,
            &pod.node_name,
        );
        let token;
        let mut attempt = None;
        if !cfg.use_projected_sa {
            // ---- legacy: vdbi's session checks the API-attested identity, then an orphan ----
            issuer
                .authorise(&self.roles, db, &who)
                .await
                .map_err(failure)?;
            token = undo_log
                .creating(issuer.orphan_token(db, uuid, &who))
                .await
                .map_err(failure)?;
            self.record(undo_log, Created::Token(NewToken::Orphan(token.clone())))
                .await?;
        } else {
            // ---- projected: the pod's own identity, with a token bound to the pod ----
            let binding = PodBinding {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            };
            let login = undo_log
                .creating(issuer.pod_login(&self.deps.kube, db, &who, Some(&binding)))
                .await
                .map_err(failure)?;
            token = login.token;
            self.record(undo_log, Created::Token(NewToken::Pod(token.clone())))
                .await?;
            // Crash consistency: this attempt's login is recorded (its accessor, under a key of
            // its own) before anything is done with the token. A plugin killed from here on
            // leaves the record, and the revoker's sweep revokes that accessor (with the leases
            // it holds) unless the uuid's entry holds this very token.
            let key = bookkeeping::new_attempt_key(uuid);
            let record = Reservation {
                entry: entry.clone(),
                token_accessor: login.accessor,
                vault_role: db.role.clone(),
            };
            let kind = ReservationKind::Attempt;
            undo_log
                .creating(issuer.write_reservation(kind, &key, record, &pod.namespace))
                .await
                .map_err(failure)?;
            let created = Created::Reservation {
                kind,
                key: key.clone(),
            };
            self.record(undo_log, created).await?;
            attempt = Some(key);
            issuer.check_period(db, &token, &self.deps.log).await;
        }
        let creds = undo_log
            .creating(issuer.read_credentials(&spec.engine, db, &token, READ_ATTEMPTS))
            .await
            .map_err(failure)?;
        entry.lease_id = creds.lease_id.clone();
        entry.token_id = token.expose().to_string();

        // ---- bookkeeping: an entry this one replaces (the pod's cache entry was lost while
        // the pod lived) has its token revoked *before* it is overwritten, so that no instant
        // leaves that token unrecorded; otherwise what the entry held is put back on failure.
        let previous = issuer
            .call(KvGet {
                uuid: uuid.to_string(),
                deadline,
            })
            .await
            .map_err(|e| vault_failure(db, "reading the bookkeeping entry", &e, &self.deps.log))?;
        let restore = match previous {
            Some(p) if !p.token_id.is_empty() && p.token_id != token.expose() => {
                // The uuid comes from an annotation the pod's owner may edit: only this pod's
                // own entry is replaced (and its token revoked), never another pod's.
                if p.namespace != pod.namespace
                    || (!p.pod_name.is_empty() && p.pod_name != pod.name)
                {
                    return Err(Failure::fetch(format!(
                        "dbConfig {:?}: the bookkeeping entry of the pod's uuid belongs to another pod: refused",
                        db.name
                    )));
                }
                warn!(self.deps.log, "the pod's earlier credentials are superseded (cache entry lost?); revoking them first";
                    "uuid" => uuid, "db" => &db.name);
                let earlier = VaultToken::new(p.token_id);
                // On the fetch's own lane and deadline, not the paced one of background work.
                let revoked = if cfg.use_projected_sa {
                    let msg = RevokeSelf {
                        token: earlier,
                        deadline,
                    };
                    issuer.call(msg).await
                } else {
                    let msg = RevokeOrphan {
                        target: earlier,
                        deadline,
                    };
                    issuer.call(msg).await
                };
                revoked.map_err(|e| {
                    vault_failure(db, "revoking the superseded token", &e, &self.deps.log)
                })?;
                Restore::Delete
            }
            Some(p) => Restore::Entry(Box::new(p)),
            None => Restore::Delete,
        };
        undo_log
            .creating(issuer.write_entry(uuid, entry, &pod.namespace))
            .await
            .map_err(failure)?;
        self.record(
            undo_log,
            Created::Entry {
                uuid: uuid.to_string(),
                restore,
            },
        )
        .await?;
        // ---- legacy: the token is recorded, it may now live its full TTL ----
        if !cfg.use_projected_sa {
            issuer.confirm_token(&token).await.map_err(failure)?;
        }
        Ok(Issued {
            username: creds.username,
            password: creds.password.expose().to_string(),
            attempt,
        })
    }

    /// Records what the fetch created. A fetch is never abandoned while it runs (it is not cut
    /// from outside), so a refused record is undone at once all the same.
    async fn record(&self, undo_log: &UndoLog, created: Created) -> Result<(), Failure> {
        match undo_log.record(created) {
            Ok(()) => Ok(()),
            Err(late) => {
                undo(&self.deps.vault, vec![late], &self.deps.log).await;
                Err(Failure::fetch("the credential fetch was abandoned"))
            }
        }
    }
}

/// KV keys of the dbConfigs: the `uuid` annotation's entries in dbConfig order; a pod without
/// one uses its UID for the first dbConfig (as vault-db-injector). Two dbConfigs sharing a key
/// would overwrite each other's bookkeeping (credentials nobody renews or revokes): refused.
fn entry_keys(spec: &PodDbSpec, pod_uid: &str) -> Result<Vec<String>, Failure> {
    let mut keys = Vec::with_capacity(spec.configs.len());
    for (i, db) in spec.configs.iter().enumerate() {
        let key = match spec.uuids.get(i) {
            Some(u) => u.clone(),
            None if i == 0 => pod_uid.to_string(),
            None => {
                return Err(Failure::fetch(format!(
                "the uuid annotation has no entry for dbConfig {:?} ({} entries for {} dbConfigs)",
                db.name,
                spec.uuids.len(),
                spec.configs.len()
            )))
            }
        };
        if !bookkeeping::is_valid_key(&key) || keys.contains(&key) {
            return Err(Failure::fetch(format!(
                "the uuid annotation entry for dbConfig {:?} is invalid or repeated",
                db.name
            )));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Refuses annotations over the per-pod bounds (`maxDbConfigsPerPod`, `maxAnnotationBytes`),
/// with the webhook's check and wording; reason `too_large`.
fn within_limits(
    cfg: &crate::config::Config,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<(), Failure> {
    annotations::check_limits(annotations, pod_limits(cfg)).map_err(|e| Failure {
        reason: FailureReason::TooLarge,
        message: e.to_string(),
    })
}

/// How often a credentials read is tried when Vault answers HTTP 500 (see
/// [`Issuer::read_credentials`]): concurrent fetches and the prewarmer grant several roles on one
/// database at once.
const READ_ATTEMPTS: u32 = 3;

/// Turns a session/actor error into the refusal message.
fn vault_failure(db: &DbConfig, step: &str, e: &ActorError, log: &Logger) -> Failure {
    Failure::fetch(Refusal::from_call(db, step, e, log).message)
}

/// Turns a failed issuing step into the refusal message (the NRI metric reason stays
/// `fetch_error`; the wording is the webhook's).
fn issue_failure(db: &DbConfig, e: IssueError, log: &Logger) -> Failure {
    Failure::fetch(Refusal::from_issue(db, e, log).message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{parse, PREFIX};
    use std::collections::BTreeMap;

    fn spec(uuid: Option<&str>, dbs: &[&str]) -> PodDbSpec {
        let mut a = BTreeMap::new();
        for db in dbs {
            a.insert(format!("{PREFIX}{db}.role"), "r".to_string());
            a.insert(format!("{PREFIX}{db}.env-key-dbuser"), "U".to_string() + db);
        }
        if let Some(u) = uuid {
            a.insert(format!("{PREFIX}uuid"), u.to_string());
        }
        match parse(&a, "databases").unwrap() {
            PodContract::Databases(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn annotations_over_the_per_pod_bounds_are_refused_as_too_large() {
        let mut cfg = crate::config::Config {
            max_db_configs_per_pod: 2,
            ..Default::default()
        };
        let mut a = BTreeMap::new();
        for db in ["a", "b", "c"] {
            a.insert(format!("{PREFIX}{db}.role"), "r".to_string());
        }
        let f = within_limits(&cfg, &a).unwrap_err();
        assert_eq!(f.reason, FailureReason::TooLarge);
        assert_eq!(f.reason.as_str(), "too_large");
        assert!(f.message.contains("maxDbConfigsPerPod"), "{}", f.message);
        cfg.max_db_configs_per_pod = 16;
        assert!(within_limits(&cfg, &a).is_ok());
        cfg.max_annotation_bytes = 10;
        let f = within_limits(&cfg, &a).unwrap_err();
        assert!(f.message.contains("maxAnnotationBytes"), "{}", f.message);
    }

    #[test]
    fn entry_keys_follow_the_uuid_annotation_with_the_uid_fallback() {
        assert_eq!(
            entry_keys(&spec(Some("u1,u2"), &["a", "b"]), "uid").unwrap(),
            vec!["u1", "u2"]
        );
        assert_eq!(entry_keys(&spec(None, &["a"]), "uid").unwrap(), vec!["uid"]);
        // A second dbConfig without its own uuid would overwrite the first one's entry.
        let err = entry_keys(&spec(None, &["a", "b"]), "uid").unwrap_err();
        assert!(err.message.contains("\"b\""), "{}", err.message);
        assert!(entry_keys(&spec(Some("x,x"), &["a", "b"]), "uid").is_err());
        assert!(entry_keys(&spec(Some("../x"), &["a"]), "uid").is_err());
    }
}
