//! The families of vdbi's `/metrics`, read from the registry's own catalogue
//! ([`Metrics::families`]): names and types (the dashboard and alert checks read them). The
//! catalogue is checked against the real exposition text in `telemetry::metrics`'s tests.

use std::collections::BTreeMap;
use vdbi::telemetry::Metrics;

/// Family name -> type (`counter`, `gauge`, `histogram`, `summary`) of every `vdbi_*` family.
pub fn family_types() -> BTreeMap<String, String> {
    Metrics::new(true)
        .families()
        .iter()
        .map(|f| (f.name.to_string(), f.kind.as_str().to_string()))
        .collect()
}

/// Family name -> label names of every `vdbi_*` family.
pub fn family_labels() -> BTreeMap<String, Vec<String>> {
    Metrics::new(true)
        .families()
        .iter()
        .map(|f| {
            let labels = f.labels.iter().map(|l| l.to_string()).collect();
            (f.name.to_string(), labels)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_registered_family_has_a_type() {
        let types = super::family_types();
        for name in vdbi::telemetry::metrics::family_names() {
            assert!(types.contains_key(&name), "{name} has no type");
        }
    }
}
