//! The bookkeeping entries in KV: writes and deletes.

use super::families::Families;
use super::{Entry, EntryLabels, ENTRY_LABELS};
use prometheus::{Counter, CounterVec};

#[derive(Clone)]
pub struct BookkeepingMetrics {
    labels: EntryLabels,
    stored: Counter,
    store_failed: CounterVec,
    deleted: CounterVec,
    delete_failed: CounterVec,
}

impl BookkeepingMetrics {
    pub(super) fn register(f: &mut Families, labels: EntryLabels) -> BookkeepingMetrics {
        BookkeepingMetrics {
            labels,
            stored: f.counter(
                "vdbi_store_data_count_success",
                "Bookkeeping entries written",
            ),
            store_failed: f.counter_vec(
                "vdbi_store_data_count_error",
                "Bookkeeping entry write failures",
                ENTRY_LABELS,
            ),
            deleted: f.counter_vec(
                "vdbi_delete_data_count_success",
                "Bookkeeping entries deleted",
                ENTRY_LABELS,
            ),
            delete_failed: f.counter_vec(
                "vdbi_delete_data_count_error",
                "Bookkeeping entry delete failures",
                ENTRY_LABELS,
            ),
        }
    }

    /// An entry written (created or rewritten).
    pub fn stored(&self) {
        self.stored.inc();
    }

    pub fn store_failed(&self, e: Entry<'_>) {
        self.store_failed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    /// Counts one deleted entry. The series is per namespace (`uuid` left empty): the entry's
    /// own per-uuid series are dropped right after, so a per-uuid count would be deleted in the
    /// call that sets it and never reach a scrape.
    pub fn deleted(&self, namespace: &str) {
        self.deleted.with_label_values(&["", namespace]).inc();
    }

    pub fn delete_failed(&self, e: Entry<'_>) {
        self.delete_failed
            .with_label_values(&self.labels.of(e))
            .inc();
    }

    pub(super) fn forget(&self, labels: &[&str; 2]) {
        let _ = self.store_failed.remove_label_values(labels);
        let _ = self.delete_failed.remove_label_values(labels);
    }
}
