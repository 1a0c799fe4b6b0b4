//! A panicking actor inside a running vdbi is restarted by its supervisor while the rest of the
//! process keeps answering: probes, the Vault session and the webhook.

use actix::prelude::*;
use std::time::Duration;
use vdbi::actors::vault_session::{IsLoggedIn, KvList};
use vdbi::actors::{supervise, Backoff, RestartGuard};
use vdbi_testkit::platform::Platform;
use vdbi_testkit::*;

struct Fragile {
    _guard: RestartGuard,
    calls: u32,
}
impl Actor for Fragile {
    type Context = Context<Self>;
}
#[derive(Message)]
#[rtype(result = "u32")]
struct Work {
    explode: bool,
}
impl Handler<Work> for Fragile {
    type Result = u32;
    fn handle(&mut self, w: Work, _: &mut Context<Self>) -> u32 {
        if w.explode {
            panic!("injected failure in a supervised actor");
        }
        self.calls += 1;
        self.calls
    }
}

#[actix_rt::test]
async fn a_panicking_actor_is_restarted_and_the_process_keeps_answering() {
    let p = Platform::get();
    let vdbi = start_vdbi(&p, Options::default()).await;
    vdbi.wait_ready().await;
    let m = vdbi.running.metrics.clone();
    let fragile = supervise(
        "fragile",
        &vdbi::telemetry::logging::discard(),
        &m,
        Backoff {
            initial: Duration::from_millis(20),
            ..Backoff::default()
        },
        |g| Fragile {
            _guard: g,
            calls: 0,
        },
    );
    assert_eq!(fragile.send(Work { explode: false }).await.unwrap(), 1);
    assert!(
        fragile.send(Work { explode: true }).await.is_err(),
        "the panic drops the request"
    );

    // The rest of the process answers meanwhile.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let live = http
        .get(format!("http://{}/healthz", vdbi.running.health_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert!(vdbi.running.vault.send(IsLoggedIn).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    vdbi.running
        .vault
        .call(KvList { deadline })
        .await
        .expect("Vault session still serves");
    let metrics = http
        .get(format!("http://{}/metrics", vdbi.running.metrics_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vdbi_actor_restarts_total{actor=\"fragile\"} 1"),
        "{metrics}"
    );

    // And the supervised actor is back, with fresh state.
    let mut back = None;
    for _ in 0..100 {
        if let Ok(n) = fragile.send(Work { explode: false }).await {
            back = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(back, Some(1));
    assert_eq!(fragile.restarts(), 1);
    vdbi.running.shutdown().await;
}
