//! Issuing credentials (shared by admission and the NRI plugin): the role check, the orphan
//! token or the projected login, the TokenRequest.

use super::families::Families;
use crate::telemetry::cardinality::BoundedCounterVec;
use prometheus::{Counter, CounterVec, IntGauge};

/// A role check that refused a pod's ServiceAccount. The first three come from the request
/// (bounded series, see `telemetry::cardinality`); `cause` is the check's verdict.
#[derive(Clone, Copy, Debug)]
pub struct Denial<'a> {
    pub service_account: &'a str,
    pub namespace: &'a str,
    pub db_role: &'a str,
    pub cause: &'a str,
}

#[derive(Clone)]
pub struct IssuanceMetrics {
    authorized: Counter,
    denied: BoundedCounterVec,
    orphan_created: Counter,
    orphan_failed: Counter,
    token_request_errors: CounterVec,
    login_errors: CounterVec,
    role_misconfigured: BoundedCounterVec,
    slots_in_use: IntGauge,
    slots_waiting: IntGauge,
    slot_waits: CounterVec,
}

/// Who asked for an issuance slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotUser {
    Admission,
    Nri,
}

impl SlotUser {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotUser::Admission => "admission",
            SlotUser::Nri => "nri",
        }
    }
}

impl IssuanceMetrics {
    pub(super) fn register(f: &mut Families) -> IssuanceMetrics {
        IssuanceMetrics {
            authorized: f.counter(
                "vdbi_service_account_authorized_count",
                "Role checks that authorised the pod's ServiceAccount",
            ),
            denied: f.bounded_counter_vec(
                "vdbi_service_account_denied_count",
                "Role checks that denied the pod's ServiceAccount",
                &["service_account_name", "namespace", "db_role", "cause"],
                &[true, true, true, false],
            ),
            orphan_created: f.counter(
                "vdbi_orphan_ticket_created_count_success",
                "Orphan tokens created",
            ),
            orphan_failed: f.counter(
                "vdbi_orphan_ticket_created_count_error",
                "Orphan token creation failures",
            ),
            token_request_errors: f.counter_vec(
                "vdbi_token_request_errors_total",
                "TokenRequest failures",
                &["reason"],
            ),
            login_errors: f.counter_vec(
                "vdbi_vault_login_errors_total",
                "Vault login failures",
                &["reason", "auth_mode"],
            ),
            role_misconfigured: f.bounded_counter_vec(
                "vdbi_projected_role_misconfigured_total",
                "Projected logins whose role has no token_period",
                &["role"],
                &[true],
            ),
            slots_in_use: f.int_gauge(
                "vdbi_issuance_slots_in_use",
                "dbConfigs being issued now (issuance slots held), all pods together",
            ),
            slots_waiting: f.int_gauge(
                "vdbi_issuance_slots_waiting",
                "dbConfigs waiting for an issuance slot",
            ),
            slot_waits: f.counter_vec(
                "vdbi_issuance_slot_waits_total",
                "dbConfigs that had to wait for an issuance slot (issuanceSlots or issuanceSlotsPerPod reached)",
                &["component"],
            ),
        }
    }

    /// The role check let the pod's ServiceAccount use the role.
    pub fn authorized(&self) {
        self.authorized.inc();
    }

    /// The role check refused the pod's ServiceAccount.
    pub fn denied(&self, d: Denial<'_>) {
        self.denied
            .with_label_values(&[d.service_account, d.namespace, d.db_role, d.cause])
            .inc();
    }

    /// An orphan token created (`true`) or its creation failed.
    pub fn orphan_token(&self, created: bool) {
        if created {
            self.orphan_created.inc()
        } else {
            self.orphan_failed.inc()
        }
    }

    /// A TokenRequest for the pod's ServiceAccount failed.
    pub fn token_request_failed(&self, reason: &str) {
        self.token_request_errors.with_label_values(&[reason]).inc();
    }

    /// A Vault login failed (`auth_mode`: `projected`, or vdbi's own session's mode).
    pub fn login_failed(&self, reason: &str, auth_mode: &str) {
        self.login_errors
            .with_label_values(&[reason, auth_mode])
            .inc();
    }

    /// A projected login whose role has no `token_period`.
    pub fn projected_role_misconfigured(&self, role: &str) {
        self.role_misconfigured.with_label_values(&[role]).inc();
    }

    /// The issuance slots now held and the requests now waiting for one.
    pub fn slots(&self, in_use: usize, waiting: usize) {
        self.slots_in_use.set(in_use as i64);
        self.slots_waiting.set(waiting as i64);
    }

    /// A dbConfig of `user` had to wait for its issuance slot.
    pub fn slot_waited(&self, user: SlotUser) {
        self.slot_waits.with_label_values(&[user.as_str()]).inc();
    }
}
