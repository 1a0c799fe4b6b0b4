//! The admission webhook edge: HTTPS (rustls, reloading certificate) on `:8443`, AdmissionReview
//! `admission.k8s.io/v1` at `/` and `/mutate`, body size limit. A malformed body gets HTTP 400
//! with a JSON error; a non-Pod object gets a denial. The admission work itself is done by the
//! Admission actor.

use crate::actors::admission::{Admission, Mutate};
use crate::actors::ActorHandle;
use crate::telemetry::Metrics;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use serde_json::json;
use slog::{warn, Logger};
use std::net::SocketAddr;
use std::sync::Arc;

struct WebhookState {
    admission: ActorHandle<Admission>,
    metrics: Metrics,
    log: Logger,
}

fn bad_request(state: &WebhookState, reason: &str, detail: String) -> HttpResponse {
    state
        .metrics
        .admission_denied
        .with_label_values(&[reason])
        .inc();
    state.metrics.mutated_pods_error.inc();
    warn!(state.log, "rejected malformed admission request"; "reason" => reason, "error" => &detail);
    HttpResponse::BadRequest().json(json!({"error": reason, "message": detail}))
}

/// The request of an AdmissionReview body whose object is read as `T`; on failure the
/// `reason` label and the detail for [`bad_request`] (`reason` when the body does not parse,
/// `malformed_review` when it holds no request).
fn request_of<T>(
    body: &[u8],
    reason: &'static str,
    context: &str,
) -> Result<AdmissionRequest<T>, (&'static str, String)>
where
    T: kube::Resource + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<T> =
        serde_json::from_slice(body).map_err(|e| (reason, format!("{context}: {e}")))?;
    review.try_into().map_err(|_| {
        (
            "malformed_review",
            "AdmissionReview without request".to_string(),
        )
    })
}

async fn review(
    state: web::Data<WebhookState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let _ = req;
    // Read as a dynamic object first so a non-Pod kind is a clear denial, not a parse error.
    let dyn_req =
        match request_of::<DynamicObject>(&body, "malformed_review", "not an AdmissionReview") {
            Ok(r) => r,
            Err((reason, detail)) => return bad_request(&state, reason, detail),
        };
    if dyn_req.kind.kind != "Pod" || !dyn_req.kind.group.is_empty() {
        state
            .metrics
            .admission_denied
            .with_label_values(&["not_a_pod"])
            .inc();
        let resp = AdmissionResponse::from(&dyn_req).deny(format!(
            "vdbi only handles core/v1 Pods, not {}",
            dyn_req.kind.kind
        ));
        return HttpResponse::Ok().json(resp.into_review());
    }
    let request = match request_of::<Pod>(&body, "malformed_pod", "the Pod object does not parse") {
        Ok(r) => r,
        Err((reason, detail)) => return bad_request(&state, reason, detail),
    };
    let fallback = AdmissionResponse::from(&request);
    let response = match state.admission.send(Mutate { request }).await {
        Ok(r) => r,
        Err(e) => {
            state.metrics.mutated_pods_error.inc();
            state
                .metrics
                .admission_denied
                .with_label_values(&["internal"])
                .inc();
            fallback.deny(format!("vdbi: admission worker unavailable ({e}); retry"))
        }
    };
    HttpResponse::Ok().json(response.into_review())
}

/// Longest wait for in-flight reviews at shutdown (an admission ends within `admissionTimeout`,
/// below the apiserver's 30 s webhook maximum).
pub const WEBHOOK_DRAIN: std::time::Duration = std::time::Duration::from_secs(8);

/// Starts the HTTPS webhook server.
pub fn webhook_server(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    admission: ActorHandle<Admission>,
    metrics: Metrics,
    log: Logger,
    max_body: usize,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::from(Arc::new(WebhookState {
        admission,
        metrics,
        log,
    }));
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .route("/", web::post().to(review))
            .route("/mutate", web::post().to(review))
    })
    .workers(workers)
    .disable_signals()
    .client_request_timeout(std::time::Duration::from_secs(10))
    // In-flight reviews get at most WEBHOOK_DRAIN to finish at shutdown (actix's default: 30 s).
    .shutdown_timeout(WEBHOOK_DRAIN.as_secs())
    .bind_rustls_0_23(addr, tls)?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "userInfo": {},
                "object": object,
            }
        }))
        .unwrap()
    }

    #[test]
    fn request_of_names_what_is_wrong() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let req = request_of::<Pod>(&review(pod), "malformed_pod", "the Pod").unwrap();
        assert_eq!(req.uid, "u-1");
        assert_eq!(req.object.unwrap().metadata.name.as_deref(), Some("p"));

        let (reason, detail) =
            request_of::<DynamicObject>(b"{", "malformed_review", "not an AdmissionReview")
                .unwrap_err();
        assert_eq!(reason, "malformed_review");
        assert!(detail.starts_with("not an AdmissionReview: "), "{detail}");

        let bad_pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": 3}});
        let (reason, detail) =
            request_of::<Pod>(&review(bad_pod), "malformed_pod", "the Pod").unwrap_err();
        assert_eq!(reason, "malformed_pod");
        assert!(detail.starts_with("the Pod: "), "{detail}");

        let empty = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"
        }))
        .unwrap();
        let (reason, detail) = request_of::<Pod>(&empty, "malformed_pod", "the Pod").unwrap_err();
        assert_eq!(reason, "malformed_review");
        assert_eq!(detail, "AdmissionReview without request");
    }
}
