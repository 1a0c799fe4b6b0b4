//! Bounded label sets for metrics whose labels come from request content.
//!
//! A label value taken from an AdmissionReview (ServiceAccount name, namespace, Vault role of an
//! annotation) is chosen by whoever sends the review: one series per value would let a caller grow
//! the registry without bound. [`BoundedCounterVec`] keeps the family's name and labels (dashboards
//! of vault-db-injector keep working) but creates at most `max_series` distinct series; past that,
//! a new combination is counted under [`OVERFLOW`] in every request-derived label (labels with a
//! fixed set of values, such as `cause`, are kept), so totals stay right and memory stays bounded.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, CounterVec};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The value that stands for every request-derived label once the series budget is spent.
pub const OVERFLOW: &str = "_other_";

/// Default series budget of a request-labelled family.
pub const DEFAULT_MAX_SERIES: usize = 500;

/// A `CounterVec` with at most `max_series` series (plus the overflow series).
#[derive(Clone)]
pub struct BoundedCounterVec {
    inner: CounterVec,
    /// Per label position: true when its value comes from request content.
    from_request: Arc<[bool]>,
    seen: Arc<Mutex<HashSet<Vec<String>>>>,
    max_series: usize,
}

impl BoundedCounterVec {
    pub fn new(inner: CounterVec, from_request: &[bool], max_series: usize) -> BoundedCounterVec {
        BoundedCounterVec {
            inner,
            from_request: from_request.into(),
            seen: Arc::default(),
            max_series,
        }
    }

    /// The counter of `values`, or of the overflow series when the budget is spent and this
    /// combination was never seen.
    pub fn with_label_values(&self, values: &[&str]) -> Counter {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&key) || seen.len() < self.max_series {
            seen.insert(key);
            return self.inner.with_label_values(values);
        }
        drop(seen);
        let folded: Vec<&str> = values
            .iter()
            .zip(self.from_request.iter().chain(std::iter::repeat(&true)))
            .map(|(v, req)| if *req { OVERFLOW } else { *v })
            .collect();
        self.inner.with_label_values(&folded)
    }

    /// Number of distinct (non-overflow) series created so far.
    pub fn series(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Collector for BoundedCounterVec {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.inner.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn series_are_bounded_and_totals_kept() {
        let v = CounterVec::new(Opts::new("t", "t"), &["sa", "cause"]).unwrap();
        let b = BoundedCounterVec::new(v.clone(), &[true, false], 3);
        for i in 0..1000 {
            b.with_label_values(&[&format!("sa-{i}"), "NotInRole"])
                .inc();
        }
        // Seen series keep counting after the budget is spent.
        b.with_label_values(&["sa-0", "NotInRole"]).inc();
        assert_eq!(b.series(), 3);
        assert_eq!(v.with_label_values(&["sa-0", "NotInRole"]).get(), 2.0);
        assert_eq!(v.with_label_values(&[OVERFLOW, "NotInRole"]).get(), 997.0);
        let families = b.collect();
        assert_eq!(families[0].get_metric().len(), 4);
    }
}
