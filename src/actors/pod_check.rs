//! The revoker's live pod checks: is the pod a bookkeeping entry names (or a deletion the watch
//! reported) really gone? They use `list` with a field selector — the right the chart gives the
//! renewer and revoker (`list`/`watch` on pods) — never `get`. A check the API refuses is not a
//! silent "keep": it is logged at ERROR and counted in `vdbi_pod_check_errors_total{reason}`, so a
//! revoker without the rights it needs is seen at once.

use super::pod_index::PodRecord;
use crate::annotations::UUID_KEY;
use crate::bookkeeping::BookkeepingEntry;
use crate::k8s::KubeError;
use crate::telemetry::Metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use slog::{error, warn, Logger};

/// Where the pod an entry names stands.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PodState {
    Running,
    Finished,
    Gone,
    /// The API could not tell: keep the entry, look again at the next sweep.
    Unknown,
}

fn state_of(p: &Pod) -> PodState {
    match PodRecord::from_pod(p) {
        Some(r) if r.finished => PodState::Finished,
        _ => PodState::Running,
    }
}

/// Counts and logs a failed check (ERROR when the API refuses it for lack of rights).
pub fn check_failed(e: &KubeError, namespace: &str, pod: &str, metrics: &Metrics, log: &Logger) {
    metrics.revocation.pod_check_failed(e.reason());
    if e.is_forbidden() {
        error!(log, "live pod check refused: the revoker's ServiceAccount needs `list` on pods (see the chart's RBAC)";
            "namespace" => namespace, "pod" => pod, "error" => %e);
    } else {
        warn!(log, "live pod check failed"; "namespace" => namespace, "pod" => pod, "error" => %e);
    }
}

/// Where the pod named by the entry stands: a list by name when the entry has one, else a search
/// of the entry's namespace for a pod carrying the uuid.
pub async fn pod_state(
    kube: &kube::Client,
    e: &BookkeepingEntry,
    uuid: &str,
    metrics: &Metrics,
    log: &Logger,
) -> PodState {
    if e.namespace.is_empty() {
        return PodState::Gone;
    }
    if !e.pod_name.is_empty() {
        return match crate::k8s::find_pod(kube, &e.namespace, &e.pod_name).await {
            // A pod of that name that does not reference the entry (a repeated delivery's
            // credential set the stored pod does not carry, or a later pod of the same name):
            // the entry's pod is gone.
            Ok(Some(p)) if !references(&p, uuid) => PodState::Gone,
            Ok(Some(p)) => state_of(&p),
            Ok(None) => PodState::Gone,
            Err(err) => {
                check_failed(&err, &e.namespace, &e.pod_name, metrics, log);
                PodState::Unknown
            }
        };
    }
    let api: Api<Pod> = Api::namespaced(kube.clone(), &e.namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .find(|p| references(p, uuid))
            .map(state_of)
            .unwrap_or(PodState::Gone),
        Err(err) => {
            check_failed(&err.into(), &e.namespace, "", metrics, log);
            PodState::Unknown
        }
    }
}

/// Does pod `p` own the entry `uuid` (its UID, or listed in its uuid annotation)?
fn references(p: &Pod, uuid: &str) -> bool {
    p.metadata.uid.as_deref() == Some(uuid)
        || p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(UUID_KEY))
            .is_some_and(|v| v.split(',').any(|x| x.trim() == uuid))
}

/// A deletion the watch reported: does the same pod (same UID) still exist? `Some(state)` when it
/// does (its label was removed), `None` when it is gone or replaced — or when the API cannot tell
/// (logged and counted): the API reported the deletion, so it is acted on.
pub async fn still_exists(
    kube: &kube::Client,
    rec: &PodRecord,
    metrics: &Metrics,
    log: &Logger,
) -> Option<PodState> {
    match crate::k8s::find_pod(kube, &rec.namespace, &rec.name).await {
        Ok(Some(p)) if p.metadata.uid.as_deref() == Some(rec.uid.as_str()) => Some(state_of(&p)),
        Ok(_) => None,
        Err(err) => {
            check_failed(&err, &rec.namespace, &rec.name, metrics, log);
            None
        }
    }
}
