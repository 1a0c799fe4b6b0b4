//! Admission actor: one labelled pod in, a JSON patch (or a denial) out.
//!
//! Per dbConfig, concurrently: authorise (legacy: the role check of compat §3.7 against the
//! Vault role, cached briefly; projected: TokenRequest + login as the dbConfig's role + period
//! check), then issue (legacy: orphan token + creds; projected: creds with the pod token; NRI:
//! placeholders only, and tokens the admission does not hand on are revoked), then write the KV
//! bookkeeping entry — all **before** the admission is answered, under one deadline below the
//! webhook's `timeoutSeconds`. Every token, lease and KV entry created is recorded in the
//! issuance's [`UndoLog`]: on any failure, or when the deadline passes while calls are still in
//! flight, whatever was created is revoked and deleted in the background (late arrivals are
//! undone when they land), and the denial says so. Concurrent reviews of the same pod (same
//! namespace, name, service account and annotations; the request uid for a generated name)
//! share one issuance ([`Coalescer`]): one credential set per pod. `dryRun` admissions touch
//! nothing.

use super::issuance::{
    reservations, undo, Coalescer, Created, Exposure, FairQueue, Issuer, NewToken, Refusal,
    RefusalReason, Restore, RoleCache, Subject, UndoLog,
};
use super::supervision::{spawn_detached, RestartGuard};
use super::vault_session::{RevokeSelf, VaultSession};
use super::ActorHandle;
use crate::annotations::{self, DbConfig, PodContract, PodDbSpec};
use crate::bookkeeping::{BookkeepingEntry, Reservation};
use crate::config::Config;
use crate::mutation::{self, InjectedValues};
use crate::placeholder;
use crate::telemetry::metrics::SlotUser;
use crate::telemetry::{ExternalClock, Metrics};
use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use slog::{debug, info, o, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Review one pod CREATE.
#[derive(Message)]
#[rtype(result = "AdmissionResponse")]
pub struct Mutate {
    pub request: AdmissionRequest<Pod>,
}

/// Everything an admission needs, shared by the in-flight admissions.
pub struct AdmissionDeps {
    pub config: Arc<Config>,
    pub vault: ActorHandle<VaultSession>,
    /// Needed in projected mode (TokenRequest).
    pub kube: Option<kube::Client>,
    /// Issuance slots (`issuanceSlots`, `issuanceSlotsPerPod`), shared with the NRI plugin of
    /// the same process.
    pub slots: FairQueue,
    pub metrics: Metrics,
    pub log: Logger,
}

pub struct Admission {
    _guard: RestartGuard,
    deps: Arc<AdmissionDeps>,
    shared: Arc<Shared>,
}

/// What the in-flight admissions share: the role cache, the issuances in flight by pod and the
/// issuance slots.
pub struct Shared {
    roles: RoleCache,
    issuances: Coalescer<Outcome>,
    /// Issuance slots, shared round-robin between pods (one pod cannot monopolise Vault).
    slots: FairQueue,
}

/// The result of one pod's issuance, handed to every review that joined it.
type Outcome = Result<Arc<Vec<Issued>>, Refusal>;

impl Admission {
    pub fn new(guard: RestartGuard, deps: Arc<AdmissionDeps>) -> Admission {
        Admission {
            _guard: guard,
            shared: Arc::new(Shared {
                roles: RoleCache::default(),
                issuances: Coalescer::default(),
                slots: deps.slots.clone(),
            }),
            deps,
        }
    }
}

impl Actor for Admission {
    type Context = Context<Self>;
}

impl Handler<Mutate> for Admission {
    type Result = ResponseFuture<AdmissionResponse>;
    fn handle(&mut self, msg: Mutate, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let shared = self.shared.clone();
        Box::pin(async move { admit(deps, shared, msg.request).await })
    }
}

/// What one dbConfig yields.
#[derive(Clone)]
struct Issued {
    uuid: String,
    values: InjectedValues,
}

struct PodFacts {
    namespace: String,
    name: String,
    service_account: String,
}

fn mode_label(c: &Config) -> &'static str {
    match (c.nri.enabled, c.use_projected_sa) {
        (true, _) => "nri",
        (false, true) => "projected",
        (false, false) => "legacy",
    }
}

/// The whole admission of one pod.
pub async fn admit(
    deps: Arc<AdmissionDeps>,
    shared: Arc<Shared>,
    req: AdmissionRequest<Pod>,
) -> AdmissionResponse {
    let started = Instant::now();
    let base = AdmissionResponse::from(&req);
    let log = deps.log.new(o!(
        "request_id" => req.uid.clone(),
        "namespace" => req.namespace.clone().unwrap_or_default(),
        "pod" => req.name.clone(),
    ));
    let mode = mode_label(&deps.config);
    // The time this admission waits on Vault and Kubernetes (shared with its work task).
    let clock = Arc::new(ExternalClock::new());
    let finish = |resp: AdmissionResponse, result: &str| {
        let total = started.elapsed();
        let own = (clock.calls() > 0).then(|| clock.own(total));
        deps.metrics.admission.reviewed(mode, result, total, own);
        resp
    };
    let deny = |d: Refusal| {
        deps.metrics.admission.refused(d.reason.as_str());
        warn!(log, "pod denied"; "reason" => d.reason.as_str(), "detail" => &d.message,
            "duration_ms" => started.elapsed().as_millis() as u64);
        finish(
            base.clone()
                .deny(format!("vault-db-injector: {}", d.message)),
            "denied",
        )
    };

    let Some(pod) = req.object.clone() else {
        return deny(Refusal::new(
            RefusalReason::MalformedReview,
            "the AdmissionReview carries no pod",
        ));
    };
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    // Bounded work per pod: refused before parsing further and before any Vault call.
    let limits = super::issuance::pod_limits(&deps.config);
    if let Err(e) = annotations::check_limits(&annotations, limits) {
        return deny(Refusal::new(RefusalReason::TooLarge, e.to_string()));
    }
    let spec = match annotations::parse(
        &annotations.into_iter().collect(),
        &deps.config.default_engine,
    ) {
        Ok(PodContract::Databases(s)) => s,
        Ok(PodContract::LegacyV1) => {
            info!(
                log,
                "pod carries a v1 revoke-ttl annotation; admitted unchanged"
            );
            return finish(base, "skipped");
        }
        Ok(PodContract::NoDatabases { warnings }) => {
            info!(
                log,
                "labelled pod without dbConfig annotations; admitted unchanged"
            );
            let mut w = vec!["vault-db-injector: labelled pod has no db-creds-injector.numberly.io/<db>.* annotation; no credentials injected".to_string()];
            w.extend(warnings);
            let mut resp = base;
            resp.warnings = Some(w);
            return finish(resp, "skipped");
        }
        Err(e) => return deny(Refusal::new(RefusalReason::BadAnnotations, e.to_string())),
    };
    let names = mutation::container_names(&pod);
    if let Err(e) = annotations::check_containers(&spec, names.iter().map(String::as_str)) {
        return deny(Refusal::new(RefusalReason::BadAnnotations, e.to_string()));
    }
    let facts = PodFacts {
        namespace: req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into()),
        name: if req.name.is_empty() {
            pod.metadata.name.clone().unwrap_or_default()
        } else {
            req.name.clone()
        },
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
    };

    if req.dry_run {
        // sideEffects: NoneOnDryRun — validate, show the shape, create nothing in Vault.
        let values: Vec<InjectedValues> = spec.configs.iter().map(|_| placeholders()).collect();
        let uuids: Vec<String> = spec.configs.iter().map(|_| new_uuid()).collect();
        return match mutation::build_patch(&pod, &spec, &values, &uuids)
            .ok()
            .and_then(|p| base.clone().with_patch(p).ok())
        {
            Some(mut resp) => {
                resp.warnings = Some(vec![
                    "vault-db-injector: dry run: no credentials issued, placeholder values shown"
                        .into(),
                ]);
                finish(resp, "dry_run")
            }
            None => deny(Refusal::new(
                RefusalReason::Internal,
                "cannot build the patch",
            )),
        };
    }

    let deadline = tokio::time::Instant::now() + deps.config.admission_timeout;
    let spec = Arc::new(spec);
    let facts = Arc::new(facts);
    // Reviews of the same pod share one issuance: the pod's identity and its whole contract.
    let key = coalescing_key(&req, &facts, &pod);
    let (run, joined) = shared.issuances.join_or_start(&key, || {
        issue_pod(
            deps.clone(),
            shared.clone(),
            clock.clone(),
            spec.clone(),
            facts.clone(),
            deadline,
            log.clone(),
        )
    });
    if joined {
        deps.metrics.admission.coalesced();
        debug!(log, "joined the issuance in flight for this pod");
    }
    // The run ends by its deadline (a joined review may wait a little longer than its own).
    let outcome = match tokio::time::timeout_at(deadline + Duration::from_secs(1), run).await {
        Ok(Some(o)) => o,
        Ok(None) => Err(Refusal::new(
            RefusalReason::Internal,
            "the issuance task failed; what it issued is revoked by the revoker's sweep",
        )),
        Err(_) => Err(Refusal::new(
            RefusalReason::Deadline,
            format!(
                "the pod's issuance did not finish within {:?}; {}",
                deps.config.admission_timeout,
                Exposure::InFlight.phrase()
            ),
        )),
    };
    let issued = match outcome {
        Ok(i) => i,
        Err(d) => return deny(d),
    };
    let uuids: Vec<String> = issued.iter().map(|i| i.uuid.clone()).collect();
    let values: Vec<InjectedValues> = issued.iter().map(|i| i.values.clone()).collect();
    let patched = mutation::build_patch(&pod, &spec, &values, &uuids)
        .map_err(|e| e.to_string())
        .and_then(|p| base.clone().with_patch(p).map_err(|e| e.to_string()));
    match patched {
        Ok(mut resp) => {
            deps.metrics.admission.mutated();
            if !spec.warnings.is_empty() {
                resp.warnings = Some(spec.warnings.clone());
            }
            info!(log, "pod admitted"; "uuids" => uuids.join(","), "dbconfigs" => uuids.len(),
                "auth_mode" => mode, "duration_ms" => started.elapsed().as_millis() as u64);
            finish(resp, "allowed")
        }
        // The set stays recorded: no stored pod references it, so the revoker's sweep revokes it
        // (another review of the same pod may have been answered with it).
        Err(e) => deny(Refusal::new(
            RefusalReason::Internal,
            format!("cannot build the patch: {e}; the credentials issued for it are revoked by the revoker's sweep"),
        )),
    }
}

fn placeholders() -> InjectedValues {
    InjectedValues {
        username: placeholder::generate(),
        password: placeholder::generate(),
    }
}

/// UUID v1 (time-based), as vault-db-injector's `uuid.NewUUID`.
fn new_uuid() -> String {
    static NODE: std::sync::OnceLock<[u8; 6]> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(|| {
        let mut b = [0u8; 6];
        b.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..6]);
        b[0] |= 0x01; // multicast bit: a random node id, per RFC 4122 §4.5
        b
    });
    uuid::Uuid::now_v1(node).to_string()
}

/// The admission reads credentials once: no retry on HTTP 500 (the NRI plugin retries).
const READ_ATTEMPTS: u32 = 1;

/// `namespace/name` of the pod with a digest of its service account and annotations (what the
/// issuance depends on); the request uid when the name is generated by the apiserver.
fn coalescing_key(req: &AdmissionRequest<Pod>, facts: &PodFacts, pod: &Pod) -> String {
    use std::hash::{Hash, Hasher};
    if facts.name.is_empty() {
        return format!("uid:{}", req.uid);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    facts.service_account.hash(&mut h);
    pod.metadata.annotations.hash(&mut h);
    format!("{}/{}#{:x}", facts.namespace, facts.name, h.finish())
}

/// The issuance of every dbConfig of one pod, under the admission's deadline. On failure, or
/// when the deadline passes with calls running, the undo log is abandoned and undone in the
/// background (paced lane, own patience); the refusal says what became of it.
async fn issue_pod(
    deps: Arc<AdmissionDeps>,
    shared: Arc<Shared>,
    clock: Arc<ExternalClock>,
    spec: Arc<PodDbSpec>,
    facts: Arc<PodFacts>,
    deadline: tokio::time::Instant,
    log: Logger,
) -> Outcome {
    let undo_log = Arc::new(UndoLog::default());
    let mut work = {
        let (deps, undo_log, clock, spec, facts, log) = (
            deps.clone(),
            undo_log.clone(),
            clock.clone(),
            spec.clone(),
            facts.clone(),
            log.clone(),
        );
        tokio::spawn(async move {
            let owner = shared.slots.owner(spec.configs.len(), deadline);
            let jobs = spec.configs.iter().map(|db| async {
                // Waiting for a slot counts as vdbi's own time (it is vdbi's scheduling); a
                // request still queued at the deadline gives up its place.
                let Ok(_slot) = tokio::time::timeout_at(
                    deadline,
                    shared.slots.acquire(owner, SlotUser::Admission),
                )
                .await
                else {
                    return Err(Refusal::new(
                        RefusalReason::Deadline,
                        "no issuance slot free before the admission's deadline",
                    ));
                };
                issue_one(
                    &deps,
                    &shared.roles,
                    &undo_log,
                    &clock,
                    &spec,
                    db,
                    &facts,
                    deadline,
                    &log,
                )
                .await
            });
            futures::future::join_all(jobs)
                .await
                .into_iter()
                .collect::<Result<Vec<Issued>, Refusal>>()
        })
    };
    let refusal = match tokio::time::timeout_at(deadline, &mut work).await {
        Ok(Ok(Ok(issued))) => return Ok(Arc::new(issued)),
        Ok(Ok(Err(refusal))) => refusal,
        Ok(Err(join)) => {
            // The panic's text stays in the log: it is not the pod creator's to read.
            deps.metrics.process.task_panicked("admission_issue");
            warn!(log, "the issuing task failed"; "error" => %join);
            Refusal::new(RefusalReason::Internal, "internal error while issuing")
        }
        Err(_) => {
            // Say why when the cause is known: no Vault session at all is not a slow call.
            let logged_in = clock
                .external(tokio::time::timeout(
                    Duration::from_millis(200),
                    deps.vault.send(super::vault_session::IsLoggedIn),
                ))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(true);
            if logged_in {
                Refusal::new(
                    RefusalReason::Deadline,
                    format!(
                        "Vault/Kubernetes did not answer within {:?}",
                        deps.config.admission_timeout
                    ),
                )
            } else {
                Refusal::new(
                    RefusalReason::VaultUnavailable,
                    "vdbi has no Vault session (Vault unreachable, sealed or refusing vdbi's login)",
                )
            }
        }
    };
    let (created, exposure) = undo_log.abandon();
    if !created.is_empty() {
        // A panic leaves what was created to the revoker's sweep, which finds it through the
        // reservation written before the first Vault object.
        let (task_log, task_metrics) = (log.clone(), deps.metrics.clone());
        spawn_detached(
            "admission_undo",
            &task_log,
            &task_metrics,
            async move {
                undo(&deps.vault, created, &log).await;
            },
            || {},
        );
    }
    Err(refusal.with_exposure(exposure))
}

#[allow(clippy::too_many_arguments)]
async fn issue_one(
    deps: &AdmissionDeps,
    roles: &RoleCache,
    undo_log: &UndoLog,
    clock: &ExternalClock,
    spec: &PodDbSpec,
    db: &DbConfig,
    pod: &PodFacts,
    deadline: tokio::time::Instant,
    log: &Logger,
) -> Result<Issued, Refusal> {
    let cfg = &deps.config;
    let issuer = Issuer::new(cfg, &deps.vault, &deps.metrics, clock, deadline);
    let who = Subject::new(&pod.namespace, &pod.service_account);
    let refusal = |e| Refusal::from_issue(db, e, log);
    let uuid = new_uuid();
    let mut entry =
        BookkeepingEntry::reservation(&pod.namespace, &pod.service_account, &pod.name, "");
    // Whether the reservation `uuid` is written (projected mode, right after the login).
    let mut reserved = false;
    let token = if !cfg.use_projected_sa {
        // ---- legacy authorisation: vdbi's own session reads the role and checks the SA ----
        issuer.authorise(roles, db, &who).await.map_err(refusal)?;
        if cfg.nri.enabled {
            None
        } else {
            let orphan = undo_log
                .creating(issuer.orphan_token(db, &uuid, &who))
                .await
                .map_err(refusal)?;
            record(
                deps,
                undo_log,
                Created::Token(NewToken::Orphan(orphan.clone())),
                log,
            )
            .await?;
            Some(NewToken::Orphan(orphan))
        }
    } else {
        // ---- projected: the pod's own identity logs in to Vault ----
        let kube = deps.kube.as_ref().ok_or_else(|| {
            Refusal::new(
                RefusalReason::Internal,
                "no Kubernetes client for TokenRequest",
            )
        })?;
        let login = undo_log
            .creating(issuer.pod_login(kube, db, &who, None))
            .await
            .map_err(refusal)?;
        let pod_token = login.token;
        record(
            deps,
            undo_log,
            Created::Token(NewToken::Pod(pod_token.clone())),
            log,
        )
        .await?;
        // Crash consistency: the token's accessor is recorded before anything else is done with
        // it. A process killed from here on leaves this reservation, and the revoker's sweep
        // revokes that accessor (and the leases it holds) once the uuid has no pod for the grace.
        let reservation = Reservation {
            entry: entry.clone(),
            token_accessor: login.accessor,
            vault_role: db.role.clone(),
        };
        undo_log
            .creating(issuer.write_reservation(&uuid, reservation, &pod.namespace))
            .await
            .map_err(refusal)?;
        record(
            deps,
            undo_log,
            Created::Reservation { uuid: uuid.clone() },
            log,
        )
        .await?;
        reserved = true;
        issuer.check_period(db, &pod_token, log).await;
        if cfg.nri.enabled {
            // The NRI plugin logs in again on the node; this token is not handed on.
            let _ = clock
                .external(deps.vault.send(RevokeSelf {
                    token: pod_token.clone(),
                    deadline,
                }))
                .await;
            undo_log.forget_token(&pod_token);
            None
        } else {
            Some(NewToken::Pod(pod_token))
        }
    };
    let values = match &token {
        // NRI mode: placeholders only, the plugin issues on the node.
        None => placeholders(),
        Some(NewToken::Orphan(token) | NewToken::Pod(token)) => {
            let creds = undo_log
                .creating(issuer.read_credentials(&spec.engine, db, token, READ_ATTEMPTS))
                .await
                .map_err(refusal)?;
            entry.lease_id = creds.lease_id.clone();
            entry.token_id = token.expose().to_string();
            InjectedValues {
                username: creds.username.clone(),
                password: creds.password.expose().to_string(),
            }
        }
    };
    // ---- bookkeeping, before answering ----
    if token.is_none() {
        // NRI mode: a reservation, outside the prefix vault-db-injector lists (projected: the
        // one written at the login); the NRI plugin writes the entry once it has a token and a
        // lease, then deletes the reservation.
        if !reserved {
            undo_log
                .creating(issuer.write_reservation(&uuid, Reservation::of(entry), &pod.namespace))
                .await
                .map_err(refusal)?;
            record(
                deps,
                undo_log,
                Created::Reservation { uuid: uuid.clone() },
                log,
            )
            .await?;
        }
        return Ok(Issued { uuid, values });
    }
    undo_log
        .creating(issuer.write_entry(&uuid, entry, &pod.namespace))
        .await
        .map_err(refusal)?;
    record(
        deps,
        undo_log,
        Created::Entry {
            uuid: uuid.clone(),
            restore: Restore::Delete,
        },
        log,
    )
    .await?;
    // ---- projected: the entry records the token, the reservation is done ----
    if reserved {
        reservations::complete(&deps.vault, vec![uuid.clone()], log);
    }
    // ---- legacy: the token is recorded, it may now live its full TTL ----
    if let Some(NewToken::Orphan(token)) = &token {
        issuer.confirm_token(token).await.map_err(refusal)?;
    }
    Ok(Issued { uuid, values })
}

/// Records something the admission created; if the admission was already abandoned (deadline),
/// undoes it at once and ends this dbConfig's work.
async fn record(
    deps: &AdmissionDeps,
    undo_log: &UndoLog,
    created: Created,
    log: &Logger,
) -> Result<(), Refusal> {
    match undo_log.record(created) {
        Ok(()) => Ok(()),
        Err(late) => {
            undo(&deps.vault, vec![late], log).await;
            Err(Refusal::new(RefusalReason::Deadline, "abandoned"))
        }
    }
}
