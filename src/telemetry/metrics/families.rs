//! Registration of the metric families: every family is declared once, with its name, help,
//! type and label names, through [`Families`], which registers it and keeps a catalogue of it
//! (the documentation check, the exposition checks and [`super::Metrics::value`] read that
//! catalogue instead of a hand-kept list).

use crate::telemetry::cardinality::{BoundedCounterVec, DEFAULT_MAX_SERIES};
use crate::telemetry::summary::PlainSummary;
use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntGauge, Opts, Registry,
};

/// The Prometheus type of a family, as its `# TYPE` line spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// One registered family.
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names in the order the family was declared with.
    pub labels: &'static [&'static str],
    pub(super) collector: Box<dyn Collector>,
}

/// The registry being filled and the catalogue of what was put in it.
pub(super) struct Families {
    pub registry: Registry,
    pub list: Vec<Family>,
}

/// Latency buckets of the request histograms, in seconds.
pub(super) const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Families {
    pub fn new() -> Families {
        Families {
            registry: Registry::new(),
            list: Vec::new(),
        }
    }

    fn add<C: Collector + Clone + 'static>(
        &mut self,
        name: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        c: C,
    ) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("unique metric");
        self.list.push(Family {
            name,
            kind,
            labels,
            collector: Box::new(c.clone()),
        });
        c
    }

    pub fn counter(&mut self, name: &'static str, help: &str) -> Counter {
        let c = Counter::with_opts(Opts::new(name, help)).expect("valid counter");
        self.add(name, Kind::Counter, &[], c)
    }

    pub fn counter_vec(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        let c = CounterVec::new(Opts::new(name, help), labels).expect("valid counter vec");
        self.add(name, Kind::Counter, labels, c)
    }

    /// A counter family whose labels take values from request content: `from_request` marks
    /// those label positions, which fold into the overflow series past the budget.
    pub fn bounded_counter_vec(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
        from_request: &[bool],
    ) -> BoundedCounterVec {
        let c = CounterVec::new(Opts::new(name, help), labels).expect("valid counter vec");
        let b = BoundedCounterVec::new(c, from_request, DEFAULT_MAX_SERIES);
        self.add(name, Kind::Counter, labels, b)
    }

    pub fn gauge(&mut self, name: &'static str, help: &str) -> Gauge {
        let g = Gauge::with_opts(Opts::new(name, help)).expect("valid gauge");
        self.add(name, Kind::Gauge, &[], g)
    }

    pub fn int_gauge(&mut self, name: &'static str, help: &str) -> IntGauge {
        let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge");
        self.add(name, Kind::Gauge, &[], g)
    }

    pub fn gauge_vec(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
    ) -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge vec");
        self.add(name, Kind::Gauge, labels, g)
    }

    pub fn histogram_vec(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
        buckets: &[f64],
    ) -> HistogramVec {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid histogram");
        self.add(name, Kind::Histogram, labels, h)
    }

    /// A summary with `_sum` and `_count` only (no quantiles).
    pub fn summary(&mut self, name: &'static str, help: &str) -> PlainSummary {
        let s = PlainSummary::new(name, help);
        self.add(name, Kind::Summary, &[], s)
    }
}

/// A gauge whose single series exists only while it has a meaningful value: set, it is
/// exported; cleared, the family is empty. `vdbi_last_synchronization_success` is one: only the
/// renewer that leads and has finished a cycle has a "last successful cycle", so standbys and
/// the other components export nothing an alert could mistake for a stale renewer.
#[derive(Clone)]
pub(super) struct OptionalGauge(pub GaugeVec);

impl OptionalGauge {
    pub fn set(&self, v: f64) {
        self.0.with_label_values(&[] as &[&str]).set(v);
    }
    pub fn clear(&self) {
        self.0.reset();
    }
}
