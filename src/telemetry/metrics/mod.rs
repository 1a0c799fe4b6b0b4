//! The Prometheus registry: every `vdbi_*` family of vault-db-injector 3.2.x with the same names,
//! types and labels (dashboards and alerts keep working), with its bugs fixed:
//! `vdbi_synchronization_count_success` counts successful cycles only, a KV write failure is a
//! `vdbi_store_data_count_error` (not a delete error), `vdbi_leader_election_duration_seconds` is
//! set, and the per-uuid series can be switched off (`perUuidMetrics: false` leaves `uuid` empty).
//! vdbi's own additions follow the same `vdbi_` prefix.
//!
//! The families are grouped by the duty that records them (admission, issuance, bookkeeping,
//! renewal, revocation, leadership, NRI, Vault session, process). Each group is a struct whose
//! methods take typed arguments and put the label values in the family's order; that order is
//! written in exactly one place, the group's file. Nothing outside this module touches a
//! Prometheus handle or a positional label list.

mod admission;
mod bookkeeping;
mod families;
mod issuance;
mod leadership;
mod nri;
mod process;
mod renewal;
mod revocation;
mod vault;

pub use admission::AdmissionMetrics;
pub use bookkeeping::BookkeepingMetrics;
pub use families::{Family, Kind};
pub use issuance::{Denial, IssuanceMetrics, SlotUser};
pub use leadership::LeadershipMetrics;
pub use nri::{CacheFileError, NriMetrics, PrewarmFailure, Reconnect};
pub use process::{ProcessMetrics, SentryEvents};
pub use renewal::RenewalMetrics;
pub use revocation::RevocationMetrics;
pub use vault::{CallOutcome, VaultMetrics};

use families::Families;
use prometheus::proto::Metric;
use prometheus::Registry;
use std::sync::Arc;

/// Label names of the per-bookkeeping-entry families, in their declared order.
const ENTRY_LABELS: &[&str] = &["uuid", "namespace"];

/// One bookkeeping entry, as the per-uuid families label it.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub uuid: &'a str,
    pub namespace: &'a str,
}

impl<'a> Entry<'a> {
    pub fn new(uuid: &'a str, namespace: &'a str) -> Entry<'a> {
        Entry { uuid, namespace }
    }
}

/// How the per-entry families are labelled: with the uuid, or with an empty `uuid` when
/// `perUuidMetrics` is off (one series per namespace).
#[derive(Clone, Copy)]
struct EntryLabels {
    per_uuid: bool,
}

impl EntryLabels {
    /// The label values in [`ENTRY_LABELS`] order.
    fn of<'a>(self, e: Entry<'a>) -> [&'a str; 2] {
        [if self.per_uuid { e.uuid } else { "" }, e.namespace]
    }
}

/// All metrics of one process. Cheap to clone (every handle is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    families: Arc<[Family]>,
    entries: EntryLabels,
    pub admission: AdmissionMetrics,
    pub issuance: IssuanceMetrics,
    pub bookkeeping: BookkeepingMetrics,
    pub renewal: RenewalMetrics,
    pub revocation: RevocationMetrics,
    pub leadership: LeadershipMetrics,
    pub nri: NriMetrics,
    pub vault: VaultMetrics,
    pub process: ProcessMetrics,
}

impl Metrics {
    /// A fresh registry with every family registered. `per_uuid` keeps the `uuid` label values.
    pub fn new(per_uuid: bool) -> Metrics {
        let mut f = Families::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            f.registry
                .register(Box::new(pc))
                .expect("process collector");
        }
        let entries = EntryLabels { per_uuid };
        let renewal = RenewalMetrics::register(&mut f, entries);
        let revocation = RevocationMetrics::register(&mut f, entries);
        let bookkeeping = BookkeepingMetrics::register(&mut f, entries);
        let issuance = IssuanceMetrics::register(&mut f);
        let leadership = LeadershipMetrics::register(&mut f);
        let nri = NriMetrics::register(&mut f);
        let admission = AdmissionMetrics::register(&mut f);
        let vault = VaultMetrics::register(&mut f);
        let process = ProcessMetrics::register(&mut f);
        Metrics {
            registry: f.registry,
            families: f.list.into(),
            entries,
            admission,
            issuance,
            bookkeeping,
            renewal,
            revocation,
            leadership,
            nri,
            vault,
            process,
        }
    }

    /// The registry (for the `/metrics` handler and extra collectors).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every `vdbi_*` family, in registration order.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// Drops the per-uuid series of one bookkeeping entry (on revoke or purge).
    pub fn forget_entry(&self, e: Entry<'_>) {
        if !self.entries.per_uuid {
            return;
        }
        let labels = self.entries.of(e);
        self.renewal.forget(&labels);
        self.revocation.forget(&labels);
        self.bookkeeping.forget(&labels);
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding error: {e}\n"))
    }

    /// The series of `family` with exactly these `labels` (name, value; any order), as a scrape
    /// would see it, or `None` while it does not exist. Panics on a family that is not
    /// registered or on label names that are not the family's: a misspelt read fails loudly
    /// instead of reading zero.
    fn series(&self, family: &str, labels: &[(&str, &str)]) -> Option<(Kind, Metric)> {
        let f = self
            .families
            .iter()
            .find(|f| f.name == family)
            .unwrap_or_else(|| panic!("no metric family {family}"));
        let mut wanted: Vec<(&str, &str)> = labels.to_vec();
        wanted.sort();
        let mut names: Vec<&str> = wanted.iter().map(|(n, _)| *n).collect();
        let mut declared = f.labels.to_vec();
        declared.sort();
        names.dedup();
        assert_eq!(names, declared, "labels of {family}");
        let gathered = f.collector.collect();
        let metric = gathered.first()?.get_metric().iter().find(|m| {
            let mut have: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            have.sort();
            have == wanted
        })?;
        Some((f.kind, metric.clone()))
    }

    /// The value of a counter or gauge series; `None` while the series does not exist.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (kind, m) = self.series(family, labels)?;
        match kind {
            Kind::Counter => Some(m.get_counter().value()),
            Kind::Gauge => Some(m.get_gauge().value()),
            other => panic!(
                "{family} is a {}; read it with observations()",
                other.as_str()
            ),
        }
    }

    /// The value of a counter series, 0 while it does not exist (a counter not yet counted).
    pub fn count(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(family, labels).unwrap_or(0.0)
    }

    /// Sample count and sum of a histogram or summary series ((0, 0) while it does not exist).
    pub fn observations(&self, family: &str, labels: &[(&str, &str)]) -> (u64, f64) {
        let Some((kind, m)) = self.series(family, labels) else {
            return (0, 0.0);
        };
        match kind {
            Kind::Histogram => {
                let h = m.get_histogram();
                (h.sample_count(), h.sample_sum())
            }
            Kind::Summary => {
                let s = m.get_summary();
                (s.sample_count(), s.sample_sum())
            }
            other => panic!("{family} is a {}; read it with value()", other.as_str()),
        }
    }
}

/// Every `vdbi_*` family name: used by the documentation check.
pub fn family_names() -> Vec<String> {
    let mut names: Vec<String> = Metrics::new(true)
        .families()
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests;
