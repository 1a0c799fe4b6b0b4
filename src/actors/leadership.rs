//! Leadership actor: Kubernetes Lease election (`coordination.k8s.io/v1`) for one duty, with
//! vault-db-injector's lease names (`lock-injector-renewer`, `lock-injector-revoker`) and timings
//! (15 s lease). It tells its subscribers when they start and stop leading, keeps campaigning
//! after losing the lease (vault-db-injector campaigned once per process), steps down when its
//! duty reports itself broken, and releases the lease on shutdown so a peer takes over at once.

use super::supervision::{RestartGuard, Subscriber};
use crate::http::HealthState;
use crate::telemetry::Metrics;
use actix::prelude::*;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use slog::{info, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const RENEWER_LEASE: &str = "lock-injector-renewer";
pub const REVOKER_LEASE: &str = "lock-injector-revoker";

/// Sent to subscribers on every change.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    pub lease: String,
    pub leading: bool,
}

/// The duty is broken (e.g. its watch cannot be restored): give the lease to a healthy peer,
/// pause, then campaign again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepDown {
    pub reason: String,
}

/// Shutdown: stop campaigning and release the lease if held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release;

#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsLeader;

#[derive(Message)]
#[rtype(result = "()")]
struct LeaseState {
    leading: bool,
    generation: u64,
}

#[derive(Message)]
#[rtype(result = "()")]
struct CampaignTrouble {
    error: String,
    generation: u64,
}

#[derive(Clone, Debug)]
pub struct LeadershipConfig {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    /// Renew this long before expiry.
    pub grace: Duration,
    /// Pause after stepping down before campaigning again.
    pub step_down_pause: Duration,
}

impl LeadershipConfig {
    /// vault-db-injector's timings: 15 s lease, renewed 5 s before expiry.
    pub fn standard(lease_name: &str, namespace: &str, identity: &str) -> LeadershipConfig {
        LeadershipConfig {
            lease_name: lease_name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            step_down_pause: Duration::from_secs(15),
        }
    }

    fn check_name(&self) -> String {
        format!("leader-election:{}", self.lease_name)
    }
}

pub struct Leadership {
    _guard: RestartGuard,
    client: Client,
    cfg: LeadershipConfig,
    subscribers: Vec<Subscriber<LeadershipChanged>>,
    leading: bool,
    generation: u64,
    campaign: Option<tokio::task::JoinHandle<()>>,
    manager: Option<Arc<LeaseManager>>,
    campaign_started: Instant,
    released: bool,
    metrics: Metrics,
    health: HealthState,
    log: Logger,
}

impl Leadership {
    pub fn new(
        guard: RestartGuard,
        client: Client,
        cfg: LeadershipConfig,
        subscribers: Vec<Subscriber<LeadershipChanged>>,
        metrics: Metrics,
        health: HealthState,
        log: Logger,
    ) -> Leadership {
        let log = log.new(slog::o!("lease" => cfg.lease_name.clone()));
        Leadership {
            _guard: guard,
            client,
            cfg,
            subscribers,
            leading: false,
            generation: 0,
            campaign: None,
            manager: None,
            campaign_started: Instant::now(),
            released: false,
            metrics,
            health,
            log,
        }
    }

    fn set_leading(&mut self, leading: bool) {
        if self.leading == leading {
            return;
        }
        self.leading = leading;
        let lease = self.cfg.lease_name.clone();
        self.metrics
            .is_leader
            .with_label_values(&[&lease])
            .set(if leading { 1.0 } else { 0.0 });
        if leading {
            self.metrics
                .leader_election_duration
                .with_label_values(&[&lease, &self.cfg.identity, "lease"])
                .set(self.campaign_started.elapsed().as_secs_f64());
            info!(self.log, "started leading"; "identity" => &self.cfg.identity);
        } else {
            info!(self.log, "stopped leading"; "identity" => &self.cfg.identity);
        }
        self.announce();
    }

    fn announce(&self) {
        for s in &self.subscribers {
            s(LeadershipChanged {
                lease: self.cfg.lease_name.clone(),
                leading: self.leading,
            });
        }
    }

    fn campaign(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        self.campaign_started = Instant::now();
        self.metrics
            .leader_election_attempts
            .with_label_values(&[&self.cfg.lease_name])
            .inc();
        self.health.set(&self.cfg.check_name(), true, "campaigning");
        let me = ctx.address();
        let client = self.client.clone();
        let cfg = self.cfg.clone();
        let (mtx, mrx) = tokio::sync::oneshot::channel();
        self.campaign = Some(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            let manager = loop {
                let built = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
                    .with_namespace(&cfg.namespace)
                    .with_identity(&cfg.identity)
                    .with_duration(cfg.lease_duration.as_secs())
                    .with_grace(cfg.grace.as_secs())
                    .build()
                    .await;
                match built {
                    Ok(m) => break Arc::new(m),
                    Err(e) => {
                        me.do_send(CampaignTrouble {
                            error: e.to_string(),
                            generation,
                        });
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            };
            let _ = mtx.send(manager.clone());
            let mut backoff = Duration::from_millis(500);
            loop {
                match manager.changed().await {
                    Ok(leading) => {
                        backoff = Duration::from_millis(500);
                        me.do_send(LeaseState {
                            leading,
                            generation,
                        });
                    }
                    Err(e) => {
                        // Could not renew: we may have lost the lease. Never give up campaigning.
                        me.do_send(CampaignTrouble {
                            error: e.to_string(),
                            generation,
                        });
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }));
        ctx.spawn(
            async move { mrx.await.ok() }
                .into_actor(self)
                .map(move |m, act, _| {
                    if act.generation == generation {
                        act.manager = m;
                    }
                }),
        );
    }

    fn stop_campaign(&mut self) -> Option<Arc<LeaseManager>> {
        if let Some(h) = self.campaign.take() {
            h.abort();
        }
        self.manager.take()
    }
}

impl Actor for Leadership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics
            .is_leader
            .with_label_values(&[&self.cfg.lease_name])
            .set(0.0);
        self.campaign(ctx);
        // Re-announce while leading, so a restarted subscriber learns it is the leader's worker.
        ctx.run_interval(Duration::from_secs(5), |act, _| {
            if act.leading {
                act.announce();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Dropped or restarted: never keep acting as leader without a campaign behind it.
        self.set_leading(false);
        if let Some(m) = self.stop_campaign() {
            tokio::spawn(async move {
                let _ = m.release().await;
            });
        }
    }
}

impl Handler<LeaseState> for Leadership {
    type Result = ();
    fn handle(&mut self, msg: LeaseState, _: &mut Context<Self>) {
        if msg.generation == self.generation && !self.released {
            self.set_leading(msg.leading);
        }
    }
}

impl Handler<CampaignTrouble> for Leadership {
    type Result = ();
    fn handle(&mut self, msg: CampaignTrouble, _: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        warn!(self.log, "lease election error; retrying"; "error" => &msg.error);
        // If we cannot confirm the lease we must assume we lost it.
        self.set_leading(false);
    }
}

impl Handler<StepDown> for Leadership {
    type Result = ();
    fn handle(&mut self, msg: StepDown, ctx: &mut Context<Self>) {
        if self.released {
            return;
        }
        warn!(self.log, "stepping down"; "reason" => &msg.reason, "pause_s" => self.cfg.step_down_pause.as_secs());
        self.set_leading(false);
        self.generation += 1;
        if let Some(m) = self.stop_campaign() {
            tokio::spawn(async move {
                let _ = m.release().await;
            });
        }
        self.health.set(
            &self.cfg.check_name(),
            true,
            format!("stepped down: {}", msg.reason),
        );
        ctx.run_later(self.cfg.step_down_pause, |act, ctx| {
            if !act.released {
                act.campaign(ctx);
            }
        });
    }
}

impl Handler<Release> for Leadership {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Release, _: &mut Context<Self>) -> Self::Result {
        self.released = true;
        self.set_leading(false);
        self.generation += 1;
        let manager = self.stop_campaign();
        let log = self.log.clone();
        Box::pin(
            async move {
                if let Some(m) = manager {
                    match tokio::time::timeout(Duration::from_secs(5), m.release()).await {
                        Ok(Ok(())) => info!(log, "lease released"),
                        Ok(Err(e)) => warn!(log, "lease release failed"; "error" => %e),
                        Err(_) => warn!(log, "lease release timed out"),
                    }
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<IsLeader> for Leadership {
    type Result = bool;
    fn handle(&mut self, _: IsLeader, _: &mut Context<Self>) -> bool {
        self.leading
    }
}
