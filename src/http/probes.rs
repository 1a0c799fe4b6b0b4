//! Plain-HTTP servers for probes (`:8888`: `/healthz`, `/readyz`, `/live`) and metrics (`:8080`,
//! every path, like promhttp). `mode: all` runs one of each for every component.

use crate::health::HealthState;
use crate::telemetry::Metrics;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;
use std::net::TcpListener;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn checks_json(h: &HealthState) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, c) in h.checks() {
        out.insert(
            name,
            json!({
                "status": if c.ready { "healthy" } else { "unhealthy" },
                "message": c.message,
            }),
        );
    }
    serde_json::Value::Object(out)
}

async fn healthz(h: web::Data<HealthState>) -> HttpResponse {
    // Liveness: never tied to Vault. The dependency states are reported for information only.
    let body = json!({
        "status": if h.wedged().is_none() { "healthy" } else { "unhealthy" },
        "checks": checks_json(&h),
        "message": h.wedged().unwrap_or_default(),
        "timestamp": now(),
    });
    if h.wedged().is_none() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn live(h: web::Data<HealthState>) -> HttpResponse {
    match h.wedged() {
        None => HttpResponse::Ok().json(json!({"status": "alive", "timestamp": now()})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "dead", "message": reason, "timestamp": now()})),
    }
}

async fn readyz(h: web::Data<HealthState>) -> HttpResponse {
    let ready = h.is_ready() && h.wedged().is_none();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": checks_json(&h),
        "timestamp": now(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn render_metrics(m: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(m.render())
}

/// The probe server on a bound listener; run it with `.await` or spawn it.
pub fn health_server(
    listener: TcpListener,
    health: HealthState,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(health);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/live", web::get().to(live))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// The metrics server on a bound listener: the text exposition on every path.
pub fn metrics_server(
    listener: TcpListener,
    metrics: Metrics,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(render_metrics))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
