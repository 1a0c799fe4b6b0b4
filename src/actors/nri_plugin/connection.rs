//! The connection to the runtime: register, serve, wait for the end, reconnect.

use super::{NriCore, PluginHandler, HEALTH_CHECK};
use crate::telemetry::metrics::Reconnect;
use nri::{NriHandler, ReconnectBackoff, Stub, StubConfig};
use slog::{error, warn};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Keeps the plugin registered: connect, serve until the connection ends, wait, reconnect.
pub(super) async fn connection_loop(core: Arc<NriCore>) {
    let deps = core.deps.clone();
    let cfg = &deps.config;
    let log = deps.log.clone();
    let mut stub_cfg = StubConfig::new(cfg.nri.plugin_name.clone(), cfg.nri.plugin_index.clone());
    stub_cfg.socket_path = cfg.nri.socket_path.clone();
    stub_cfg.deadline_fraction = core.deadline_fraction;
    let handler: Arc<dyn NriHandler> = Arc::new(PluginHandler { core: core.clone() });
    let stub = match Stub::new(stub_cfg, handler) {
        Ok(s) => s,
        Err(e) => {
            error!(log, "NRI plugin identity rejected; the plugin cannot start"; "error" => %e);
            deps.health
                .set(HEALTH_CHECK, false, format!("invalid configuration: {e}"));
            return;
        }
    };
    let schedule = deps.reconnect_schedule.clone();
    let longest = schedule
        .iter()
        .copied()
        .max()
        .unwrap_or(Duration::from_secs(30));
    let mut backoff = ReconnectBackoff::new(schedule);
    let reconnect = |step| deps.metrics.nri.reconnect(step);
    let mut reconnecting = false;
    let mut exhausted = false;
    loop {
        if reconnecting {
            reconnect(Reconnect::Attempted);
        }
        match stub.connect().await {
            Ok(mut session) => {
                backoff.reset();
                exhausted = false;
                if reconnecting {
                    reconnect(Reconnect::Succeeded);
                }
                core.registered.store(true, Ordering::SeqCst);
                deps.health
                    .set(HEALTH_CHECK, true, "registered with the runtime");
                let end = session.closed().await;
                core.registered.store(false, Ordering::SeqCst);
                deps.health.set(
                    HEALTH_CHECK,
                    false,
                    format!("connection to the runtime ended: {end:?}"),
                );
                warn!(log, "NRI connection ended; reconnecting"; "reason" => ?end);
            }
            Err(e) => {
                deps.health
                    .set(HEALTH_CHECK, false, format!("cannot register: {e}"));
                warn!(log, "NRI registration failed"; "error" => %e);
            }
        }
        reconnecting = true;
        let delay = match backoff.next_delay() {
            Some(d) => d,
            None => {
                if !exhausted {
                    exhausted = true;
                    reconnect(Reconnect::Exhausted);
                    error!(log, "NRI reconnect attempts exhausted: containers of labelled pods cannot get credentials; still retrying";
                        "every_s" => longest.as_secs());
                }
                longest
            }
        };
        tokio::time::sleep(delay).await;
    }
}
