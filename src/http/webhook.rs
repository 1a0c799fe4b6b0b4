//! The admission webhook edge: HTTPS (rustls, reloading certificate, optional client
//! authentication) on `:8443`, at `/` and `/mutate`, body size limit. A strict envelope: only an
//! `admission.k8s.io/v1` `AdmissionReview` sent as `application/json` is read (anything else: HTTP
//! 400 with a JSON error naming the problem, `vdbi_admission_denied_total{reason}` and a log
//! line); only the CREATE of a core/v1 Pod goes to the Admission actor — every other operation,
//! kind or subresource is allowed unchanged and creates nothing.

use crate::actors::admission::{Admission, Mutate};
use crate::actors::ActorHandle;
use crate::telemetry::Metrics;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use serde_json::json;
use slog::{info, warn, Logger};
use std::sync::Arc;

struct WebhookState {
    admission: ActorHandle<Admission>,
    metrics: Metrics,
    log: Logger,
}

fn bad_request(state: &WebhookState, reason: &str, detail: String) -> HttpResponse {
    state.metrics.admission.refused(reason);
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

/// The envelope vdbi answers: `admission.k8s.io/v1` `AdmissionReview` only.
const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// True for `application/json` (parameters such as `charset` allowed).
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// An envelope other than `admission.k8s.io/v1` `AdmissionReview`; its Display is the 400's
/// detail.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected apiVersion {REVIEW_API_VERSION:?} kind {REVIEW_KIND:?}, got apiVersion {api_version:?} kind {kind:?} (register the webhook with admissionReviewVersions: [v1])")]
struct BadEnvelope {
    api_version: String,
    kind: String,
}

/// Checks the envelope's `apiVersion` and `kind`.
fn check_envelope(types: &kube::core::TypeMeta) -> Result<(), BadEnvelope> {
    if types.api_version != REVIEW_API_VERSION || types.kind != REVIEW_KIND {
        return Err(BadEnvelope {
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
        });
    }
    Ok(())
}

/// What vdbi does with a well-formed review.
#[derive(Debug, PartialEq, Eq)]
enum Handling {
    /// CREATE of a core/v1 Pod (not a subresource): the Admission actor decides.
    Mutate,
    /// Anything else: allowed unchanged, nothing created.
    Ignore(String),
}

fn handling(req: &AdmissionRequest<DynamicObject>) -> Handling {
    use kube::core::admission::Operation;
    let k = &req.kind;
    let is_pod = k.group.is_empty() && k.version == "v1" && k.kind == "Pod";
    let what = if k.group.is_empty() {
        format!("{}/{}", k.version, k.kind)
    } else {
        format!("{}/{}/{}", k.group, k.version, k.kind)
    };
    if !is_pod || req.sub_resource.is_some() {
        let sub = req
            .sub_resource
            .as_deref()
            .map(|s| format!(" (subresource {s})"))
            .unwrap_or_default();
        return Handling::Ignore(format!("{what}{sub} is not a core/v1 Pod"));
    }
    if req.operation != Operation::Create {
        return Handling::Ignore(format!("operation {:?} of a Pod", req.operation));
    }
    Handling::Mutate
}

/// What the edge makes of one HTTP request: a 400, a request to allow unchanged, or a pod
/// CREATE for the Admission actor. Pure (no state), so it can be fuzzed.
#[derive(Debug)]
enum Parsed {
    Bad(&'static str, String),
    Ignore(Box<AdmissionRequest<DynamicObject>>, String),
    Mutate(Box<AdmissionRequest<Pod>>),
}

fn parse_review(content_type: Option<&str>, body: &[u8]) -> Parsed {
    if !is_json(content_type) {
        return Parsed::Bad(
            "bad_content_type",
            format!(
                "Content-Type must be application/json, got {:?}",
                content_type.unwrap_or("")
            ),
        );
    }
    // Read as a dynamic object first: the envelope, the kind and the operation decide whether
    // the object is read as a Pod at all.
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Parsed::Bad("malformed_review", format!("not an AdmissionReview: {e}")),
    };
    if let Err(bad) = check_envelope(&review.types) {
        return Parsed::Bad("bad_envelope", bad.to_string());
    }
    let dyn_req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return Parsed::Bad(
                "malformed_review",
                "AdmissionReview without request".to_string(),
            )
        }
    };
    if let Handling::Ignore(why) = handling(&dyn_req) {
        return Parsed::Ignore(Box::new(dyn_req), why);
    }
    match request_of::<Pod>(body, "malformed_pod", "the Pod object does not parse") {
        Ok(r) => Parsed::Mutate(Box::new(r)),
        Err((reason, detail)) => Parsed::Bad(reason, detail),
    }
}

async fn review(
    state: web::Data<WebhookState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let request = match parse_review(content_type, &body) {
        Parsed::Bad(reason, detail) => return bad_request(&state, reason, detail),
        Parsed::Ignore(dyn_req, why) => {
            // Only pod CREATEs are vdbi's business; a registration sending more gets them back
            // untouched (never a denial: that would block unrelated work).
            info!(state.log, "admission request not handled; allowed unchanged";
                "request_id" => &dyn_req.uid, "why" => &why);
            let resp = AdmissionResponse::from(&*dyn_req);
            return HttpResponse::Ok().json(resp.into_review());
        }
        Parsed::Mutate(r) => *r,
    };
    let fallback = AdmissionResponse::from(&request);
    let response = match state.admission.send(Mutate { request }).await {
        Ok(r) => r,
        Err(e) => {
            state.metrics.admission.refused("internal");
            warn!(state.log, "admission worker unavailable"; "error" => %e);
            fallback.deny("vault-db-injector: admission worker unavailable; retry")
        }
    };
    HttpResponse::Ok().json(response.into_review())
}

/// Longest wait for in-flight reviews at shutdown (an admission ends within `admissionTimeout`,
/// below the apiserver's 30 s webhook maximum).
pub const WEBHOOK_DRAIN: std::time::Duration = std::time::Duration::from_secs(8);

/// The HTTPS webhook server on a bound listener.
pub fn webhook_server(
    listener: std::net::TcpListener,
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
    .listen_rustls_0_23(listener, tls)?
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

    #[test]
    fn envelope_content_type_and_version_are_strict() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("Application/JSON")));
        for bad in [None, Some(""), Some("text/plain"), Some("application/yaml")] {
            assert!(!is_json(bad), "{bad:?}");
        }
        let tm = |v: &str, k: &str| kube::core::TypeMeta {
            api_version: v.into(),
            kind: k.into(),
        };
        assert!(check_envelope(&tm("admission.k8s.io/v1", "AdmissionReview")).is_ok());
        let e = check_envelope(&tm("admission.k8s.io/v1beta1", "AdmissionReview")).unwrap_err();
        assert!(e.to_string().contains("v1beta1"), "{e}");
        assert!(check_envelope(&tm("admission.k8s.io/v1", "Foo")).is_err());
    }

    #[test]
    fn only_pod_creates_are_mutated() {
        let req = |op: &str, group: &str, kind: &str, sub: Option<&str>| {
            let mut v = serde_json::from_slice::<serde_json::Value>(&review(
                json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "p"}}),
            ))
            .unwrap();
            v["request"]["operation"] = json!(op);
            v["request"]["kind"]["group"] = json!(group);
            v["request"]["kind"]["kind"] = json!(kind);
            if let Some(s) = sub {
                v["request"]["subResource"] = json!(s);
            }
            request_of::<DynamicObject>(&serde_json::to_vec(&v).unwrap(), "r", "c").unwrap()
        };
        assert_eq!(handling(&req("CREATE", "", "Pod", None)), Handling::Mutate);
        for (op, group, kind, sub) in [
            ("UPDATE", "", "Pod", None),
            ("DELETE", "", "Pod", None),
            ("CONNECT", "", "Pod", None),
            ("CREATE", "", "Pod", Some("ephemeralcontainers")),
            ("CREATE", "", "Secret", None),
            ("CREATE", "apps", "Deployment", None),
            ("CREATE", "example.com", "Pod", None),
        ] {
            assert!(
                matches!(handling(&req(op, group, kind, sub)), Handling::Ignore(_)),
                "{op} {group}/{kind} {sub:?}"
            );
        }
    }

    /// Any byte string with any Content-Type, and valid reviews with fields replaced by
    /// arbitrary JSON: the edge never panics, and only a v1 JSON pod CREATE reaches the actor.
    /// A fixed seed and case budget keep CI runs short and reproducible.
    mod fuzz {
        use super::super::*;
        use super::review;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        fn cfg(cases: u32) -> Config {
            Config {
                cases,
                rng_seed: RngSeed::Fixed(0x7664_6269),
                failure_persistence: None,
                ..Config::default()
            }
        }

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                "[ -~]{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                        .prop_map(|m| { serde_json::Value::Object(m.into_iter().collect()) }),
                ]
            })
        }

        const PATHS: &[&[&str]] = &[
            &["apiVersion"],
            &["kind"],
            &["request"],
            &["request", "uid"],
            &["request", "kind"],
            &["request", "kind", "kind"],
            &["request", "operation"],
            &["request", "subResource"],
            &["request", "dryRun"],
            &["request", "object"],
            &["request", "object", "metadata"],
            &["request", "object", "metadata", "annotations"],
            &["request", "object", "spec"],
            &["request", "object", "spec", "containers"],
        ];

        proptest! {
            #![proptest_config(cfg(512))]

            #[test]
            fn arbitrary_bytes_never_panic(
                body in prop::collection::vec(any::<u8>(), 0..512),
                ct in prop_oneof![Just(None), Just(Some("application/json".to_string())), "[ -~]{0,20}".prop_map(Some)],
            ) {
                let _ = parse_review(ct.as_deref(), &body);
            }

            #[test]
            fn mutated_reviews_never_panic(path in 0..PATHS.len(), value in json_value()) {
                let base = review(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "annotations": {"db-creds-injector.numberly.io/db.role": "r"}},
                    "spec": {"containers": [{"name": "app", "image": "x"}]}}));
                let mut v: serde_json::Value = serde_json::from_slice(&base).unwrap();
                let mut slot = &mut v;
                for key in PATHS[path] {
                    if !slot.is_object() {
                        *slot = json!({});
                    }
                    slot = slot.as_object_mut().unwrap().entry(key.to_string()).or_insert(serde_json::Value::Null);
                }
                *slot = value;
                let body = serde_json::to_vec(&v).unwrap();
                if let Parsed::Mutate(r) = parse_review(Some("application/json"), &body) {
                    prop_assert_eq!(v["apiVersion"].as_str(), Some("admission.k8s.io/v1"));
                    prop_assert_eq!(&r.kind.kind, "Pod");
                    prop_assert!(r.sub_resource.is_none());
                }
            }
        }
    }
}
