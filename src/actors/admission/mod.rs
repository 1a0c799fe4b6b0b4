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

mod issue;

use super::issuance::{
    reservations, undo, Coalescer, Created, Exposure, FairQueue, Issuer, NewToken, Refusal,
    RefusalReason, Restore, RoleCache, Subject, UndoLog,
};
use super::supervision::{spawn_detached, RestartGuard};
use super::vault_session::{RevokeSelf, VaultSession};
use super::ActorHandle;
use crate::annotations::{self, DbConfig, PodContract, PodDbSpec};
use crate::bookkeeping::{BookkeepingEntry, Reservation, ReservationKind};
use crate::config::Config;
use crate::mutation::{self, InjectedValues};
use crate::placeholder;
use crate::telemetry::metrics::SlotUser;
use crate::telemetry::{ExternalClock, Metrics};
use actix::prelude::*;
use issue::issue_pod;
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
        Ok(None) => {
            // Counted once, by the review that started the run (joined ones share its end).
            if !joined {
                deps.metrics.process.task_panicked("admission_run");
                warn!(log, "the pod's issuance run panicked");
            }
            Err(Refusal::new(
                RefusalReason::Internal,
                "the issuance task failed; what it issued is revoked by the revoker's sweep",
            ))
        }
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
