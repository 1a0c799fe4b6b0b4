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
use super::supervision::RestartGuard;
use super::vault_session::{
    CreateOrphanToken, KvDelete, KvPut, LoginKubernetes, LookupSelf, ReadAuthRole,
    ReadDbCredentials, RevokeOrphan, RevokeSelf, VaultSession,
};
use super::ActorHandle;
use crate::annotations::{self, DbConfig, PodContract, PodDbSpec};
use crate::bookkeeping::BookkeepingEntry;
use crate::config::Config;
use crate::k8s;
use crate::mutation::{self, InjectedValues};
use crate::placeholder;
use crate::telemetry::Metrics;
use crate::vault::{can_get_role, KubeAuthRole, VaultToken};
use actix::prelude::*;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use slog::{debug, info, o, warn, Logger};
use std::collections::HashMap;
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

/// Vault k8s-auth roles read for the legacy role check, kept for a short while.
#[derive(Default)]
pub struct RoleCache {
    entries: Mutex<HashMap<String, (Instant, KubeAuthRole)>>,
}

const ROLE_CACHE_TTL: Duration = Duration::from_secs(30);

impl RoleCache {
    pub fn get(&self, role: &str) -> Option<KubeAuthRole> {
        let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.get(role)
            .filter(|(t, _)| t.elapsed() < ROLE_CACHE_TTL)
            .map(|(_, r)| r.clone())
    }
    pub fn put(&self, role: &str, value: KubeAuthRole) {
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(role.to_string(), (Instant::now(), value));
    }
}

/// Something an admission created in Vault, to undo if the admission fails.
enum Created {
    /// Legacy orphan token: revoke-orphan with vdbi's session (its DB lease dies with it).
    OrphanToken(VaultToken),
    /// Projected pod token: revoke-self with the token itself (its DB lease dies with it).
    PodToken(VaultToken),
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
        g.retain(|c| !matches!(c, Created::PodToken(t) if t == token));
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
    let finish = |resp: AdmissionResponse, result: &str| {
        deps.metrics
            .admission_duration
            .with_label_values(&[mode, result])
            .observe(started.elapsed().as_secs_f64());
        resp
    };
    let deny = |d: Denial| {
        deps.metrics.mutated_pods_error.inc();
        deps.metrics
            .admission_denied
            .with_label_values(&[d.reason])
            .inc();
        warn!(log, "pod denied"; "reason" => d.reason, "message" => &d.message,
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
        let (deps, roles, tracker, spec, facts, log) = (
            deps.clone(),
            roles.clone(),
            tracker.clone(),
            spec.clone(),
            facts.clone(),
            log.clone(),
        );
        tokio::spawn(async move {
            let jobs = spec
                .configs
                .iter()
                .map(|db| issue_one(&deps, &roles, &tracker, &spec, db, &facts, deadline, &log));
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
            let logged_in = tokio::time::timeout(
                Duration::from_millis(200),
                deps.vault.send(super::vault_session::IsLoggedIn),
            )
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
                "mode" => mode, "duration_ms" => started.elapsed().as_millis() as u64);
            finish(resp, "allowed")
        }
        Err(e) => {
            let created = tracker.abandon();
            cleanup(&deps, created, &log).await;
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

/// Turns a session/actor error into the denial the user reads.
fn vault_denial(db: &DbConfig, step: &str, e: &ActorError) -> Denial {
    let (reason, what) = match e {
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
    Denial::new(
        reason,
        format!(
            "dbConfig {:?} (role {:?}): {step}: {what}",
            db.name, db.role
        ),
    )
}

#[allow(clippy::too_many_arguments)]
async fn issue_one(
    deps: &AdmissionDeps,
    roles: &RoleCache,
    tracker: &Tracker,
    spec: &PodDbSpec,
    db: &DbConfig,
    pod: &PodFacts,
    deadline: tokio::time::Instant,
    log: &Logger,
) -> Result<Issued, Denial> {
    let cfg = &deps.config;
    let m = &deps.metrics;
    let uuid = new_uuid();
    let mut entry = BookkeepingEntry {
        lease_id: String::new(),
        token_id: String::new(),
        namespace: pod.namespace.clone(),
        service_account_name: pod.service_account.clone(),
        pod_name: pod.name.clone(),
        node_name: String::new(),
    };
    let values;
    if !cfg.use_projected_sa {
        // ---- legacy authorisation: vdbi's own session reads the role and checks the SA ----
        let role = match roles.get(&db.role) {
            Some(r) => r,
            None => {
                let r = deps
                    .vault
                    .call(ReadAuthRole {
                        role: db.role.clone(),
                        deadline,
                    })
                    .await
                    .map_err(|e| {
                        if e.is_not_found() {
                            Denial::new(
                                "role_not_found",
                                format!(
                                "dbConfig {:?}: Vault role {:?} does not exist at auth/{}/role/{}",
                                db.name, db.role, cfg.vault_auth_path, db.role),
                            )
                        } else {
                            vault_denial(db, "reading the Vault role", &e)
                        }
                    })?;
                roles.put(&db.role, r.clone());
                r
            }
        };
        if let Err(cause) = can_get_role(&role, &db.role, &pod.service_account, &pod.namespace) {
            m.sa_denied
                .with_label_values(&[
                    &pod.service_account,
                    &pod.namespace,
                    &db.role,
                    cause.as_str(),
                ])
                .inc();
            return Err(Denial::new(
                "sa_denied",
                format!(
                    "dbConfig {:?}: service account {}/{} may not use Vault role {:?} ({})",
                    db.name,
                    pod.namespace,
                    pod.service_account,
                    db.role,
                    cause.as_str()
                ),
            ));
        }
        m.sa_authorized.inc();
        if cfg.nri.enabled {
            values = placeholders();
        } else {
            let orphan = deps
                .vault
                .call(CreateOrphanToken {
                    policies: vec![db.role.clone()],
                    period: cfg.token_ttl,
                    display_name: "injector-orphan-token".into(),
                    deadline,
                })
                .await;
            let orphan = match orphan {
                Ok(t) => {
                    m.orphan_ticket_success.inc();
                    t.token
                }
                Err(e) => {
                    m.orphan_ticket_error.inc();
                    return Err(vault_denial(db, "creating the orphan token", &e));
                }
            };
            record_or_undo(deps, tracker, Created::OrphanToken(orphan.clone()), log).await?;
            values = read_credentials(deps, spec, db, &orphan, deadline, &mut entry).await?;
        }
    } else {
        // ---- projected: the pod's own identity logs in to Vault ----
        let kube = deps
            .kube
            .as_ref()
            .ok_or_else(|| Denial::new("internal", "no Kubernetes client for TokenRequest"))?;
        let jwt = tokio::time::timeout_at(
            deadline,
            k8s::token_request(
                kube,
                &pod.namespace,
                &pod.service_account,
                &cfg.token_request_audiences,
                cfg.token_request_expiration_seconds,
                None,
            ),
        )
        .await
        .map_err(|_| {
            Denial::new(
                "deadline",
                format!("dbConfig {:?}: TokenRequest timed out", db.name),
            )
        })?
        .map_err(|e| {
            m.token_request_errors
                .with_label_values(&[e.token_request_reason()])
                .inc();
            Denial::new(
                "token_request",
                format!(
                    "dbConfig {:?}: TokenRequest for service account {}/{} failed: {e}",
                    db.name, pod.namespace, pod.service_account
                ),
            )
        })?;
        let login = deps
            .vault
            .call(LoginKubernetes {
                role: db.role.clone(),
                jwt,
                deadline,
            })
            .await
            .map_err(|e| {
                if let Some(v) = e.vault() {
                    m.vault_login_errors
                        .with_label_values(&[v.login_failure_reason(), "projected"])
                        .inc();
                }
                vault_denial(db, &format!("Vault login as role {:?}", db.role), &e)
            })?;
        let pod_token = login.token.clone();
        record_or_undo(deps, tracker, Created::PodToken(pod_token.clone()), log).await?;
        match deps
            .vault
            .call(LookupSelf {
                token: pod_token.clone(),
                deadline,
            })
            .await
        {
            Ok(info) if info.period.is_zero() => {
                m.projected_role_misconfigured
                    .with_label_values(&[&db.role])
                    .inc();
                warn!(log, "Vault role has no token_period: the pod token cannot be renewed past its TTL"; "role" => &db.role);
            }
            Ok(_) => {}
            Err(e) => debug!(log, "lookup-self failed"; "error" => %e),
        }
        if cfg.nri.enabled {
            // The NRI plugin logs in again on the node; this token is not handed on.
            let _ = deps
                .vault
                .send(RevokeSelf {
                    token: pod_token.clone(),
                    deadline,
                })
                .await;
            tracker.forget_pod_token(&pod_token);
            values = placeholders();
        } else {
            values = read_credentials(deps, spec, db, &pod_token, deadline, &mut entry).await?;
        }
    }
    // ---- bookkeeping, before answering ----
    let stored = deps
        .vault
        .call(KvPut {
            uuid: uuid.clone(),
            entry,
            deadline,
        })
        .await;
    match stored {
        Ok(()) => m.store_data_success.inc(),
        Err(e) => {
            m.store_data_error
                .with_label_values(&[m.uuid(&uuid), &pod.namespace])
                .inc();
            return Err(vault_denial(db, "writing the bookkeeping entry", &e));
        }
    }
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

/// Reads `<engine>/creds/<role>` with `token` (orphan or pod token) and records the lease and
/// token in the bookkeeping entry.
async fn read_credentials(
    deps: &AdmissionDeps,
    spec: &PodDbSpec,
    db: &DbConfig,
    token: &VaultToken,
    deadline: tokio::time::Instant,
    entry: &mut BookkeepingEntry,
) -> Result<InjectedValues, Denial> {
    let creds = deps
        .vault
        .call(ReadDbCredentials {
            token: Some(token.clone()),
            mount: spec.engine.clone(),
            role: db.role.clone(),
            deadline,
        })
        .await
        .map_err(|e| {
            vault_denial(
                db,
                &format!("reading {}/creds/{}", spec.engine, db.role),
                &e,
            )
        })?;
    entry.lease_id = creds.lease_id.clone();
    entry.token_id = token.expose().to_string();
    Ok(InjectedValues {
        username: creds.username.clone(),
        password: creds.password.expose().to_string(),
    })
}

/// Undoes what a failed admission created, with its own deadline: tokens first (their DB leases
/// die with them), then the KV entries — but an entry is kept when a token could not be revoked,
/// so the revoker's sweep still finds and revokes it.
async fn cleanup(deps: &AdmissionDeps, created: Vec<Created>, log: &Logger) {
    if created.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (entries, tokens): (Vec<_>, Vec<_>) = created
        .into_iter()
        .partition(|c| matches!(c, Created::Entry(_)));
    let revocations = tokens.into_iter().map(|c| async move {
        let res = match c {
            Created::OrphanToken(t) => deps
                .vault
                .call(RevokeOrphan { target: t, deadline })
.await,
            Created::PodToken(t) => deps
                .vault
                .call(RevokeSelf { token: t, deadline })
.await,
            Created::Entry(_) => Ok(()),
        };
        if let Err(e) = &res {
            warn!(log, "could not revoke a failed admission's token; the revoker's sweep will retry"; "error" => %e);
        }
        res.is_ok()
    });
    let all_revoked = futures::future::join_all(revocations)
        .await
        .into_iter()
        .all(|ok| ok);
    if !all_revoked {
        return;
    }
    for c in entries {
        if let Created::Entry(uuid) = c {
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
}
