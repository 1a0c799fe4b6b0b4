//! A quantile-less Prometheus summary (`_sum` and `_count` only), which the `prometheus` crate
//! lacks. vault-db-injector exposes `vdbi_last_synchronization_duration` as such a summary;
//! keeping the type keeps dashboards' `rate(..._sum)/rate(..._count)` queries working.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType, Summary};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct PlainSummary {
    desc: Desc,
    state: Arc<Mutex<(u64, f64)>>,
}

impl PlainSummary {
    pub fn new(name: &str, help: &str) -> PlainSummary {
        PlainSummary {
            desc: Desc::new(name.into(), help.into(), vec![], Default::default())
                .expect("valid summary descriptor"),
            state: Arc::new(Mutex::new((0, 0.0))),
        }
    }

    pub fn observe(&self, value: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        s.1 += value;
    }

    /// (count, sum)
    pub fn get(&self) -> (u64, f64) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for PlainSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (count, sum) = self.get();
        let mut summary = Summary::default();
        summary.set_sample_count(count);
        summary.set_sample_sum(sum);
        let mut metric = Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.mut_metric().push(metric);
        vec![family]
    }
}
