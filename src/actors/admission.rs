//! Admission actor: one labelled pod in, a JSON patch (or a denial) out.
//!
//! Per dbConfig, concurrently: authorise (legacy: the role check of compat §3.7 against the
//! Vault role, cached briefly; projected: TokenRequest + login as the dbConfig's role + period
//! check), then issue (legacy: orphan token + creds; projected: creds with the pod token; NRI:
//! placeholders only, and tokens the admission does not hand on are revoked), then write the KV
//! bookkeeping entry — all **before** the admission is answered, under one deadline below the
//! webhook's `timeoutSeconds`. Every token, lease and KV entry created is tracked: on any failure,
//! or when the deadline passes while calls are still in flight, whatever was created is revoked
//! and deleted (late arrivals are cleaned when they land). `dryRun` admissions touch nothing.

use super::error::ActorError;
use super::issuing::{
    revoke_tokens, step_message, IssueError, Issuer, NewToken, RoleCache, Subject,
};
use super::supervision::RestartGuard;
use super::vault_session::{KvDelete, RevokeSelf, VaultSession};
use super::ActorHandle;
use crate::annotations::{self, DbConfig, PodContract, PodDbSpec};
use crate::bookkeeping::BookkeepingEntry;
use crate::config::Config;
use crate::mutation::{self, InjectedValues};
use crate::placeholder;
use crate::telemetry::{ExternalClock, Metrics};
use crate::vault::VaultToken;
use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use slog::{debug, info, o, warn, Logger};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    pub metrics: Metrics,
    pub log: Logger,
}

pub struct Admission {
    _guard: RestartGuard,
    deps: Arc<AdmissionDeps>,
    roles: Arc<RoleCache>,
}

impl Admission {
    pub fn new(guard: RestartGuard, deps: Arc<AdmissionDeps>) -> Admission {
        Admission {
            _guard: guard,
            deps,
            roles: Arc::new(RoleCache::default()),
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
        let roles = self.roles.clone();
        Box::pin(async move { admit(deps, roles, msg.request).await })
    }
}

/// Something an admission created in Vault, to undo if the admission fails.
enum Created {
    /// Legacy orphan token or projected pod token.
    Token(NewToken),
    /// KV bookkeeping entry.
    Entry(String),
}

/// Tracks what one admission created; once abandoned, late creations are undone on arrival.
#[derive(Default)]
struct Tracker {
    abandoned: AtomicBool,
    created: Mutex<Vec<Created>>,
}

impl Tracker {
    /// Records `c`; returns it back if the admission was already abandoned (caller undoes it).
    fn record(&self, c: Created) -> Option<Created> {
        let mut g = self.created.lock().unwrap_or_else(|e| e.into_inner());
        if self.abandoned.load(Ordering::SeqCst) {
            return Some(c);
        }
        g.push(c);
        None
    }

    /// Marks the admission failed and takes everything created so far.
    fn abandon(&self) -> Vec<Created> {
        let mut g = self.created.lock().unwrap_or_else(|e| e.into_inner());
        self.abandoned.store(true, Ordering::SeqCst);
        std::mem::take(&mut *g)
    }

    /// Removes a pod token the admission revoked itself (NRI mode).
    fn forget_pod_token(&self, token: &VaultToken) {
        let mut g = self.created.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|c| !matches!(c, Created::Token(NewToken::Pod(t)) if t == token));
    }
}

/// Why a pod is refused: the message the user sees and the metric reason.
#[derive(Debug)]
struct Denial {
    reason: &'static str,
    message: String,
}

impl Denial {
    fn new(reason: &'static str, message: impl Into<String>) -> Denial {
        Denial {
            reason,
            message: message.into(),
        }
    }
}

/// What one dbConfig yields.
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
    roles: Arc<RoleCache>,
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
        let m = &deps.metrics;
        m.admission_duration
            .with_label_values(&[mode, result])
            .observe(total.as_secs_f64());
        if clock.calls() > 0 {
            m.admission_own_duration
                .with_label_values(&[mode, result])
                .observe(clock.own(total).as_secs_f64());
        }
        resp
    };
    let deny = |d: Denial| {
        deps.metrics.mutated_pods_error.inc();
        deps.metrics
            .admission_denied
            .with_label_values(&[d.reason])
            .inc();
        warn!(log, "pod denied"; "reason" => d.reason, "detail" => &d.message,
            "duration_ms" => started.elapsed().as_millis() as u64);
        finish(
            base.clone()
                .deny(format!("vault-db-injector: {}", d.message)),
            "denied",
        )
    };

    let Some(pod) = req.object.clone() else {
        return deny(Denial::new(
            "malformed_review",
            "the AdmissionReview carries no pod",
        ));
    };
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
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
        Err(e) => return deny(Denial::new("bad_annotations", e.to_string())),
    };
    let names = mutation::container_names(&pod);
    if let Err(e) = annotations::check_containers(&spec, names.iter().map(String::as_str)) {
        return deny(Denial::new("bad_annotations", e.to_string()));
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
            None => deny(Denial::new("internal", "cannot build the patch")),
        };
    }

    let deadline = tokio::time::Instant::now() + deps.config.admission_timeout;
    let tracker = Arc::new(Tracker::default());
    let spec = Arc::new(spec);
    let facts = Arc::new(facts);
    let work = {
        let (deps, roles, tracker, clock, spec, facts, log) = (
            deps.clone(),
            roles.clone(),
            tracker.clone(),
            clock.clone(),
            spec.clone(),
            facts.clone(),
            log.clone(),
        );
        tokio::spawn(async move {
            let jobs = spec.configs.iter().map(|db| {
                issue_one(
                    &deps, &roles, &tracker, &clock, &spec, db, &facts, deadline, &log,
                )
            });
            futures::future::join_all(jobs)
                .await
                .into_iter()
                .collect::<Result<Vec<Issued>, Denial>>()
        })
    };
    let mut work = work;
    let outcome = match tokio::time::timeout_at(deadline, &mut work).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(Denial::new(
            "internal",
            format!("admission task failed: {join}"),
        )),
        Err(_) => {
            // Calls still in flight: abandon, and clean up when (and whatever) they finish.
            let leftovers = tracker.abandon();
            let (deps2, log2) = (deps.clone(), log.clone());
            tokio::spawn(async move {
                let _ = work.await;
                cleanup(&deps2, leftovers, &log2).await;
            });
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
            if !logged_in {
                return deny(Denial::new(
                    "vault_unavailable",
                    "vdbi has no Vault session (Vault unreachable, sealed or refusing vdbi's login); nothing was issued",
                ));
            }
            return deny(Denial::new(
                "deadline",
                format!(
                    "Vault/Kubernetes did not answer within {:?}; nothing was issued",
                    deps.config.admission_timeout
                ),
            ));
        }
    };
    let issued = match outcome {
        Ok(i) => i,
        Err(d) => {
            let created = tracker.abandon();
            let (deps2, log2) = (deps.clone(), log.clone());
            tokio::spawn(async move { cleanup(&deps2, created, &log2).await });
            return deny(d);
        }
    };
    let uuids: Vec<String> = issued.iter().map(|i| i.uuid.clone()).collect();
    let values: Vec<InjectedValues> = issued.into_iter().map(|i| i.values).collect();
    let patched = mutation::build_patch(&pod, &spec, &values, &uuids)
        .map_err(|e| e.to_string())
        .and_then(|p| base.clone().with_patch(p).map_err(|e| e.to_string()));
    match patched {
        Ok(mut resp) => {
            deps.metrics.mutated_pods_success.inc();
            if !spec.warnings.is_empty() {
                resp.warnings = Some(spec.warnings.clone());
            }
            info!(log, "pod admitted"; "uuids" => uuids.join(","), "dbconfigs" => uuids.len(),
                "auth_mode" => mode, "duration_ms" => started.elapsed().as_millis() as u64);
            finish(resp, "allowed")
        }
        Err(e) => {
            let created = tracker.abandon();
            clock.external(cleanup(&deps, created, &log)).await;
            deny(Denial::new(
                "internal",
                format!("cannot build the patch: {e}"),
            ))
        }
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

/// Turns a failed issuing step into the denial the user reads.
fn issue_denial(db: &DbConfig, e: IssueError) -> Denial {
    let (step, e) = match e {
        IssueError::RoleNotFound(m) => return Denial::new("role_not_found", m),
        IssueError::ServiceAccountDenied(m) => return Denial::new("sa_denied", m),
        IssueError::TokenRequestTimeout(m) => return Denial::new("deadline", m),
        IssueError::TokenRequest(m) => return Denial::new("token_request", m),
        IssueError::Session { step, error } => (step, error),
    };
    let (reason, what) = match &e {
        ActorError::Deadline(_) => ("deadline", "timed out".to_string()),
        ActorError::NoSession(m) => (
            "vault_unavailable",
            format!("vdbi has no Vault session ({m})"),
        ),
        ActorError::Mailbox(m) => ("internal", format!("internal error ({m})")),
        ActorError::Kube(k) => ("kubernetes", k.to_string()),
        ActorError::Vault(v) => (
            match v.class() {
                "sealed" => "vault_sealed",
                "transport" | "timeout" => "vault_unavailable",
                "permission_denied" => "vault_permission_denied",
                _ => "vault_error",
            },
            v.to_string(),
        ),
    };
    Denial::new(reason, step_message(db, &step, &what))
}

/// The admission reads credentials once: no retry on HTTP 500 (the NRI plugin retries).
const READ_ATTEMPTS: u32 = 1;

#[allow(clippy::too_many_arguments)]
async fn issue_one(
    deps: &AdmissionDeps,
    roles: &RoleCache,
    tracker: &Tracker,
    clock: &ExternalClock,
    spec: &PodDbSpec,
    db: &DbConfig,
    pod: &PodFacts,
    deadline: tokio::time::Instant,
    log: &Logger,
) -> Result<Issued, Denial> {
    let cfg = &deps.config;
    let issuer = Issuer::new(cfg, &deps.vault, &deps.metrics, clock, deadline);
    let who = Subject::new(&pod.namespace, &pod.service_account);
    let denial = |e| issue_denial(db, e);
    let uuid = new_uuid();
    let mut entry =
        BookkeepingEntry::reservation(&pod.namespace, &pod.service_account, &pod.name, "");
    let token = if !cfg.use_projected_sa {
        // ---- legacy authorisation: vdbi's own session reads the role and checks the SA ----
        issuer.authorise(roles, db, &who).await.map_err(denial)?;
        if cfg.nri.enabled {
            None
        } else {
            let orphan = issuer.orphan_token(db).await.map_err(denial)?;
            record_or_undo(
                deps,
                tracker,
                Created::Token(NewToken::Orphan(orphan.clone())),
                log,
            )
            .await?;
            Some(orphan)
        }
    } else {
        // ---- projected: the pod's own identity logs in to Vault ----
        let kube = deps
            .kube
            .as_ref()
            .ok_or_else(|| Denial::new("internal", "no Kubernetes client for TokenRequest"))?;
        let pod_token = issuer
            .pod_login(kube, db, &who, None)
            .await
            .map_err(denial)?;
        record_or_undo(
            deps,
            tracker,
            Created::Token(NewToken::Pod(pod_token.clone())),
            log,
        )
        .await?;
        issuer.check_period(db, &pod_token, log).await;
        if cfg.nri.enabled {
            // The NRI plugin logs in again on the node; this token is not handed on.
            let _ = clock
                .external(deps.vault.send(RevokeSelf {
                    token: pod_token.clone(),
                    deadline,
                }))
                .await;
            tracker.forget_pod_token(&pod_token);
            None
        } else {
            Some(pod_token)
        }
    };
    let values = match token {
        // NRI mode: placeholders only, the plugin issues on the node.
        None => placeholders(),
        Some(token) => {
            let creds = issuer
                .read_credentials(&spec.engine, db, &token, READ_ATTEMPTS)
                .await
                .map_err(denial)?;
            entry.lease_id = creds.lease_id.clone();
            entry.token_id = token.expose().to_string();
            InjectedValues {
                username: creds.username.clone(),
                password: creds.password.expose().to_string(),
            }
        }
    };
    // ---- bookkeeping, before answering ----
    issuer
        .write_entry(&uuid, entry, &pod.namespace)
        .await
        .map_err(denial)?;
    record_or_undo(deps, tracker, Created::Entry(uuid.clone()), log).await?;
    Ok(Issued { uuid, values })
}

/// Records something the admission created; if the admission was already abandoned (deadline),
/// undoes it at once and ends this dbConfig's work.
async fn record_or_undo(
    deps: &AdmissionDeps,
    tracker: &Tracker,
    created: Created,
    log: &Logger,
) -> Result<(), Denial> {
    match tracker.record(created) {
        None => Ok(()),
        Some(late) => {
            cleanup(deps, vec![late], log).await;
            Err(Denial::new("deadline", "abandoned"))
        }
    }
}

/// Undoes what a failed admission created, with its own deadline: tokens first (their DB leases
/// die with them), then the KV entries — but an entry is kept when a token could not be revoked,
/// so the revoker's sweep still finds and revokes it.
async fn cleanup(deps: &AdmissionDeps, created: Vec<Created>, log: &Logger) {
    if created.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut tokens, mut entries) = (Vec::new(), Vec::new());
    for c in created {
        match c {
            Created::Token(t) => tokens.push(t),
            Created::Entry(uuid) => entries.push(uuid),
        }
    }
    let failed = revoke_tokens(&deps.vault, tokens, deadline).await;
    for e in &failed {
        warn!(log, "could not revoke a failed admission's token; the revoker's sweep will retry"; "error" => %e);
    }
    if !failed.is_empty() {
        return;
    }
    for uuid in entries {
        let res = deps
            .vault
            .call(KvDelete {
                uuid: uuid.clone(),
                deadline,
            })
            .await;
        match res {
            Ok(()) => {
                debug!(log, "removed a failed admission's bookkeeping entry"; "uuid" => &uuid)
            }
            Err(e) => {
                warn!(log, "could not remove a failed admission's bookkeeping entry"; "uuid" => &uuid, "error" => %e)
            }
        }
    }
}
