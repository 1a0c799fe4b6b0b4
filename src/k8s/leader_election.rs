//! Kubernetes Lease election, the client-go `LeaseLock` algorithm (what vault-db-injector runs
//! through `leaderelection.RunOrDie`): a replica may take the Lease when it has no holder or
//! when the holder has not renewed it for `leaseDurationSeconds` *as observed locally* (no
//! reliance on clocks agreeing across nodes); writes are optimistic (`resourceVersion`), so two
//! replicas can never both acquire; release writes an empty holder with a 1 s duration, exactly
//! as client-go's `ReleaseOnCancel`, so vdbi and vault-db-injector replicas can share a Lease
//! during a rolling migration.
//!
//! This module only performs single attempts; the timing (retry period, renew deadline) is the
//! caller's (see `actors::leadership`).

use super::KubeError;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::{Duration, Instant};

/// Outcome of one [`Elector::try_acquire_or_renew`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (acquired now or renewed).
    Leading,
    /// Someone else holds a valid Lease.
    Held { holder: String },
}

/// One identity campaigning for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The last Lease object seen or written (its `resourceVersion` guards our next write).
    observed: Option<Lease>,
    /// When `observed.spec` last changed, on our clock.
    observed_at: Instant,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            observed: None,
            observed_at: Instant::now(),
        }
    }

    fn observed_spec(&self) -> Option<&LeaseSpec> {
        self.observed.as_ref().and_then(|l| l.spec.as_ref())
    }

    /// The holder we last observed (empty: none).
    pub fn holder(&self) -> String {
        self.observed_spec()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default()
    }

    /// Do we hold the Lease according to the last observation?
    pub fn is_leader(&self) -> bool {
        !self.identity.is_empty() && self.holder() == self.identity
    }

    fn lease_valid(&self, now: Instant) -> bool {
        let secs = self
            .observed_spec()
            .and_then(|s| s.lease_duration_seconds)
            .map(|d| Duration::from_secs(d.max(0) as u64))
            .unwrap_or(self.duration);
        self.observed.is_some() && self.observed_at + secs > now
    }

    fn record(
        &self,
        holder: &str,
        duration: Duration,
        acquire: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(duration.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn set_observed(&mut self, lease: Lease) {
        let changed = self.observed_spec() != lease.spec.as_ref();
        if changed || self.observed.is_none() {
            self.observed_at = Instant::now();
        }
        self.observed = Some(lease);
    }

    async fn update(&mut self, base: &Lease, spec: LeaseSpec) -> Result<(), KubeError> {
        let mut lease = base.clone();
        lease.spec = Some(spec);
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        // Our own write: the record changed at our hand, now.
        self.observed_at = Instant::now();
        self.observed = Some(written);
        Ok(())
    }

    /// client-go `tryAcquireOrRenew`: renews when we hold the Lease, acquires it when it is free
    /// or expired, else reports the holder. A conflict (someone wrote first) is an error: the
    /// caller retries at its next period.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, KubeError> {
        let now = Instant::now();
        // 1. Fast path: the leader renews optimistically on the object it last wrote.
        if self.is_leader() && self.lease_valid(now) {
            if let Some(base) = self.observed.clone() {
                let spec = base.spec.clone().unwrap_or_default();
                let rec = self.record(
                    &self.identity,
                    self.duration,
                    spec.acquire_time.clone(),
                    spec.lease_transitions.unwrap_or(0),
                );
                if self.update(&base, rec).await.is_ok() {
                    return Ok(Attempt::Leading);
                }
            }
        }
        // 2. Read (or create) the Lease.
        let current = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.record(&self.identity, self.duration, None, 0)),
                };
                let created = self.api.create(&PostParams::default(), &lease).await?;
                self.observed_at = Instant::now();
                self.observed = Some(created);
                return Ok(Attempt::Leading);
            }
        };
        self.set_observed(current.clone());
        // 3. Someone else holds a lease that is still valid (as observed on our clock).
        let holder = self.holder();
        if !holder.is_empty() && !self.is_leader() && self.lease_valid(Instant::now()) {
            return Ok(Attempt::Held { holder });
        }
        // 4. Acquire (or renew after a failed fast path).
        let spec = current.spec.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let rec = if self.is_leader() {
            self.record(
                &self.identity,
                self.duration,
                spec.acquire_time.clone(),
                transitions,
            )
        } else {
            self.record(&self.identity, self.duration, None, transitions + 1)
        };
        self.update(&current, rec).await?;
        Ok(Attempt::Leading)
    }

    /// client-go `release`: if we hold the Lease, write an empty holder with a 1 s duration so
    /// that a peer takes it at its next attempt.
    pub async fn release(&mut self) -> Result<(), KubeError> {
        let current = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None => return Ok(()),
        };
        self.set_observed(current.clone());
        if !self.is_leader() {
            return Ok(());
        }
        let transitions = current
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let rec = self.record("", Duration::from_secs(1), None, transitions);
        self.update(&current, rec).await
    }
}
