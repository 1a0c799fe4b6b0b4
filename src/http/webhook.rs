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

async fn review(
    state: web::Data<WebhookState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let _ = req;
    // Read as a dynamic object first so a non-Pod kind is a clear denial, not a parse error.
    let dynamic: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                &state,
                "malformed_review",
                format!("not an AdmissionReview: {e}"),
            )
        }
    };
    let dyn_req: AdmissionRequest<DynamicObject> = match dynamic.try_into() {
        Ok(r) => r,
        Err(_) => {
            return bad_request(
                &state,
                "malformed_review",
                "AdmissionReview without request".into(),
            )
        }
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
    let typed: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                &state,
                "malformed_pod",
                format!("the Pod object does not parse: {e}"),
            )
        }
    };
    let request: AdmissionRequest<Pod> = match typed.try_into() {
        Ok(r) => r,
        Err(_) => {
            return bad_request(
                &state,
                "malformed_review",
                "AdmissionReview without request".into(),
            )
        }
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
    .bind_rustls_0_23(addr, tls)?
    .run())
}
