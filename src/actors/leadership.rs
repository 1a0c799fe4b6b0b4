//! Leadership actor: Kubernetes Lease election (`coordination.k8s.io/v1`) for one duty, with
//! vault-db-injector's lease names (`lock-injector-renewer`, `lock-injector-revoker`) and
//! client-go timings (15 s lease, 10 s renew deadline, 2 s retry period; the algorithm is in
//! [`crate::k8s::leader_election`]).
//!
//! It tells its subscribers when they start and stop leading. Unlike vault-db-injector it keeps
//! campaigning after losing the lease; it stops leading on its own as soon as it has not renewed
//! for the renew deadline (so a partitioned or frozen replica stops acting before a peer may take
//! over); it steps down — releases the lease, pauses, then campaigns again — when its duty reports
//! itself broken (e.g. a revoker whose pod watch cannot be restored); and it releases the lease on
//! shutdown so that a peer takes over at its next attempt (≤ 2 s).

use super::supervision::{RestartGuard, Subscriber};
use crate::health::HealthState;
use crate::k8s::leader_election::{Attempt, Elector};
use crate::telemetry::Metrics;
use actix::prelude::*;
use kube::Client;
use rand::Rng;
use slog::{info, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub const RENEWER_LEASE: &str = "lock-injector-renewer";
pub const REVOKER_LEASE: &str = "lock-injector-revoker";

/// Sent to subscribers on every change (and repeated every 5 s while leading, so that a
/// restarted subscriber learns it leads).
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

#[derive(Clone, Debug)]
pub struct LeadershipConfig {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// A lease not renewed for this long (as observed by a peer) may be taken over.
    pub lease_duration: Duration,
    /// The leader stops acting when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// Time between attempts (acquire or renew).
    pub retry_period: Duration,
    /// Pause after stepping down before campaigning again.
    pub step_down_pause: Duration,
}

impl LeadershipConfig {
    /// vault-db-injector's (client-go) timings: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn standard(lease_name: &str, namespace: &str, identity: &str) -> LeadershipConfig {
        LeadershipConfig {
            lease_name: lease_name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            step_down_pause: Duration::from_secs(15),
        }
    }

    pub fn check_name(&self) -> String {
        format!("leader-election:{}", self.lease_name)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

pub struct Leadership {
    _guard: RestartGuard,
    cfg: LeadershipConfig,
    elector: Arc<Mutex<Elector>>,
    subscribers: Vec<Subscriber<LeadershipChanged>>,
    leading: bool,
    attempting: bool,
    last_renew: Option<Instant>,
    campaign_started: Instant,
    paused_until: Option<Instant>,
    released: bool,
    failing_since: Option<Instant>,
    holder: String,
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
        let elector = Elector::new(
            client,
            &cfg.namespace,
            &cfg.lease_name,
            &cfg.identity,
            cfg.lease_duration,
        );
        Leadership {
            _guard: guard,
            cfg,
            elector: Arc::new(Mutex::new(elector)),
            subscribers,
            leading: false,
            attempting: false,
            last_renew: None,
            campaign_started: Instant::now(),
            paused_until: None,
            released: false,
            failing_since: None,
            holder: String::new(),
            metrics,
            health,
            log,
        }
    }

    fn start_campaign(&mut self) {
        self.campaign_started = Instant::now();
        self.metrics
            .leadership
            .campaign_started(&self.cfg.lease_name);
    }

    fn set_leading(&mut self, leading: bool, why: &str) {
        if self.leading == leading {
            return;
        }
        self.leading = leading;
        let lease = self.cfg.lease_name.clone();
        self.metrics.leadership.leading(&lease, leading);
        if leading {
            self.metrics.leadership.elected(
                &lease,
                &self.cfg.identity,
                self.campaign_started.elapsed(),
            );
            info!(self.log, "started leading"; "identity" => &self.cfg.identity);
        } else {
            info!(self.log, "stopped leading"; "identity" => &self.cfg.identity, "why" => why);
            self.last_renew = None;
            let paused = self.paused_until.is_some_and(|u| u > Instant::now());
            if !self.released && !paused {
                self.start_campaign();
            }
        }
        self.report_health();
        self.announce();
    }

    fn report_health(&self) {
        let name = self.cfg.check_name();
        if self.released {
            self.health.set(&name, true, "released (shutting down)");
            return;
        }
        if let Some(until) = self.paused_until {
            if until > Instant::now() {
                self.health
                    .set(&name, true, "stepped down; campaigning again soon");
                return;
            }
        }
        if let Some(since) = self.failing_since {
            if since.elapsed() >= self.cfg.lease_duration {
                self.health.set(
                    &name,
                    false,
                    format!(
                        "cannot reach the Lease API for {}s",
                        since.elapsed().as_secs()
                    ),
                );
                return;
            }
        }
        if self.leading {
            self.health
                .set(&name, true, format!("leading as {}", self.cfg.identity));
        } else if self.holder.is_empty() {
            self.health.set(&name, true, "standby (campaigning)");
        } else {
            self.health
                .set(&name, true, format!("standby (leader: {})", self.holder));
        }
    }

    fn announce(&self) {
        for s in &self.subscribers {
            s(LeadershipChanged {
                lease: self.cfg.lease_name.clone(),
                leading: self.leading,
            });
        }
    }

    fn schedule_tick(&self, ctx: &mut Context<Self>) {
        // Followers jitter their attempts (client-go: factor 1.2) so that peers do not collide.
        let mut every = self.cfg.retry_period;
        if !self.leading {
            let jitter = rand::rng().random_range(0.0..0.2);
            every = every.mul_f64(1.0 + jitter);
        }
        ctx.notify_later(Tick, every);
    }

    fn attempt(&mut self, ctx: &mut Context<Self>) {
        if self.attempting || self.released {
            return;
        }
        self.attempting = true;
        let elector = self.elector.clone();
        let timeout = self.cfg.renew_deadline / 2;
        ctx.spawn(
            async move {
                let mut el = elector.lock().await;
                let res = tokio::time::timeout(timeout, el.try_acquire_or_renew()).await;
                let holder = el.holder();
                (res, holder)
            }
            .into_actor(self)
            .map(|(res, holder), act, _| {
                act.attempting = false;
                if act.released || act.paused_until.is_some_and(|u| u > Instant::now()) {
                    return;
                }
                act.holder = holder;
                match res {
                    Ok(Ok(Attempt::Leading)) => {
                        act.failing_since = None;
                        act.last_renew = Some(Instant::now());
                        act.set_leading(true, "acquired");
                    }
                    Ok(Ok(Attempt::Held { holder })) => {
                        act.failing_since = None;
                        if act.leading {
                            warn!(act.log, "lease taken over by a peer"; "holder" => &holder);
                        }
                        act.set_leading(false, "lease held by a peer");
                    }
                    Ok(Err(e)) => act.failed(e.to_string()),
                    Err(_) => act.failed("attempt timed out".to_string()),
                }
                act.report_health();
            }),
        );
    }

    fn failed(&mut self, error: String) {
        if self.failing_since.is_none() {
            warn!(self.log, "lease attempt failed; retrying"; "error" => &error, "leading" => self.leading);
            self.failing_since = Some(Instant::now());
        }
        self.check_deadline();
    }

    /// A leader that has not renewed within the renew deadline stops acting at once.
    fn check_deadline(&mut self) {
        if self.leading
            && self
                .last_renew
                .is_none_or(|t| t.elapsed() >= self.cfg.renew_deadline)
        {
            self.set_leading(false, "renew deadline passed");
        }
    }

    fn release_lease(&self) -> impl std::future::Future<Output = ()> + 'static {
        let elector = self.elector.clone();
        let log = self.log.clone();
        let timeout = self.cfg.renew_deadline / 2;
        async move {
            let res = tokio::time::timeout(timeout, async {
                let mut el = elector.lock().await;
                el.release().await
            })
            .await;
            match res {
                Ok(Ok(())) => info!(log, "lease released"),
                Ok(Err(e)) => warn!(log, "lease release failed"; "error" => %e),
                Err(_) => warn!(log, "lease release timed out"),
            }
        }
    }
}

impl Actor for Leadership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.leadership.leading(&self.cfg.lease_name, false);
        self.start_campaign();
        self.report_health();
        ctx.notify(Tick);
        // Re-announce while leading, so a restarted subscriber learns it is the leader's worker.
        ctx.run_interval(Duration::from_secs(5), |act, _| {
            if act.leading {
                act.announce();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Dropped or restarted: never keep acting as leader without a campaign behind it. The
        // lease is not released here: a restarted instance (same identity) renews it at once.
        self.set_leading(false, "leadership actor stopped");
    }
}

impl Handler<Tick> for Leadership {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if self.released {
            return;
        }
        self.check_deadline();
        match self.paused_until {
            Some(until) if until > Instant::now() => {}
            Some(_) => {
                info!(self.log, "campaigning again after stepping down");
                self.paused_until = None;
                self.start_campaign();
                self.report_health();
                self.attempt(ctx);
            }
            None => self.attempt(ctx),
        }
        self.schedule_tick(ctx);
    }
}

impl Handler<StepDown> for Leadership {
    type Result = ();
    fn handle(&mut self, msg: StepDown, ctx: &mut Context<Self>) {
        if self.released || self.paused_until.is_some_and(|u| u > Instant::now()) {
            return;
        }
        warn!(self.log, "stepping down"; "reason" => &msg.reason, "pause_s" => self.cfg.step_down_pause.as_secs());
        self.paused_until = Some(Instant::now() + self.cfg.step_down_pause);
        self.set_leading(false, "stepped down");
        self.report_health();
        ctx.spawn(self.release_lease().into_actor(self));
    }
}

impl Handler<Release> for Leadership {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Release, _: &mut Context<Self>) -> Self::Result {
        self.released = true;
        self.set_leading(false, "shutdown");
        self.report_health();
        Box::pin(self.release_lease().into_actor(self))
    }
}

impl Handler<IsLeader> for Leadership {
    type Result = bool;
    fn handle(&mut self, _: IsLeader, _: &mut Context<Self>) -> bool {
        self.leading
    }
}
