//! AdmissionReviews as kube-apiserver sends them to the webhook: the one builder behind the
//! integration tests' clients ([`crate::ReviewClient`], [`crate::forged`]) and the load test's.

use serde_json::{json, Value};

/// An AdmissionReview (`admission.k8s.io/v1`) of `operation` on the Pod `object` (JSON) named
/// `name` in `namespace`.
pub fn admission_review(
    uid: &str,
    namespace: &str,
    name: &Value,
    operation: &str,
    object: &Value,
    dry_run: bool,
) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "vdbi-testkit"},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}
