//! The price model: what a node, a GiB of volume, of S3 and a million
//! samples cost. A shipped default (its source and date inside) or a YAML
//! file of the team's own (JSON Schema under docs/cost-analyzer/).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The shipped default.
pub const DEFAULT: &str = include_str!("../prices/default.yaml");

/// Prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PriceModel {
    /// Where the prices come from.
    pub source: String,
    /// When they were read (YYYY-MM-DD).
    pub date: String,
    /// Currency code, e.g. USD.
    pub currency: String,
    /// Hours in a billed month (730 by default).
    #[serde(default)]
    pub hours_per_month: Option<f64>,
    /// Prices of a node whose instance type is not listed.
    pub default_node: ResourcePrices,
    /// Instance types (the node label `node.kubernetes.io/instance-type`).
    #[serde(default)]
    pub instance_types: BTreeMap<String, InstanceType>,
    /// Per GiB-month, by StorageClass name.
    #[serde(default)]
    pub storage_classes: BTreeMap<String, f64>,
    /// Per GiB-month for a class not listed.
    pub default_storage_gib_month: f64,
    /// S3 per GiB-month, by storage class (STANDARD, STANDARD_IA, ...).
    #[serde(default)]
    pub s3: BTreeMap<String, f64>,
    /// Monitoring.
    #[serde(default)]
    pub monitoring: Option<MonitoringPrices>,
}

/// Per-resource prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResourcePrices {
    /// One vCPU for an hour.
    pub cpu_hour: f64,
    /// One GiB of memory for an hour.
    pub memory_gib_hour: f64,
}

/// An instance type.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InstanceType {
    /// vCPUs.
    pub cpu: f64,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// Price per hour.
    pub hourly: f64,
}

/// Monitoring prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MonitoringPrices {
    /// Per million samples ingested.
    pub per_million_samples: f64,
}

impl PriceModel {
    /// Parses a price model; errors name the file, line, column and key.
    pub fn parse(text: &str, source: &str) -> Result<PriceModel, Error> {
        let model: PriceModel = serde_saphyr::from_str(text).map_err(|err| {
            let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = err.without_snippet().to_string();
            let message = message.lines().next().unwrap_or_default();
            let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
            match shared_types::yaml_key_path(text, line, col, message) {
                Some(key) => Error::Usage(format!("{source}:{line}:{col}: {key}: {message}")),
                None => Error::Usage(format!("{source}:{line}:{col}: {message}")),
            }
        })?;
        let negative = |v: f64| !(v.is_finite() && v >= 0.0);
        let mut bad: Vec<String> = Vec::new();
        if negative(model.default_node.cpu_hour) || negative(model.default_node.memory_gib_hour) {
            bad.push("default_node".into());
        }
        for (name, t) in &model.instance_types {
            let positive = |v: f64| v.is_finite() && v > 0.0;
            if negative(t.hourly) || !positive(t.cpu) || !positive(t.memory_gib) {
                bad.push(format!("instance_types.{name}"));
            }
        }
        for (name, p) in model.storage_classes.iter().chain(model.s3.iter()) {
            if negative(*p) {
                bad.push(name.clone());
            }
        }
        if let Some(first) = bad.first() {
            return Err(Error::Usage(format!(
                "{source}: {first}: prices must be numbers >= 0 and sizes > 0"
            )));
        }
        Ok(model)
    }

    /// The shipped default.
    pub fn default_model() -> PriceModel {
        PriceModel::parse(DEFAULT, "the default price model").unwrap_or_else(|e| {
            // The shipped file is checked by a test; never reached.
            unreachable!("{e}")
        })
    }

    /// Hours in a month.
    pub fn hours(&self) -> f64 {
        self.hours_per_month.unwrap_or(730.0)
    }

    /// A node's price per hour and whether it came from its instance type.
    pub fn node_hourly(
        &self,
        instance_type: Option<&str>,
        cpu: f64,
        memory_gib: f64,
    ) -> (f64, bool) {
        match instance_type.and_then(|t| self.instance_types.get(t)) {
            Some(t) => (t.hourly, true),
            None => (
                cpu * self.default_node.cpu_hour + memory_gib * self.default_node.memory_gib_hour,
                false,
            ),
        }
    }

    /// A volume's price per GiB-month.
    pub fn storage(&self, class: Option<&str>) -> f64 {
        class
            .and_then(|c| self.storage_classes.get(c))
            .copied()
            .unwrap_or(self.default_storage_gib_month)
    }

    /// S3 per GiB-month for a storage class (STANDARD when unknown).
    pub fn s3(&self, class: &str) -> f64 {
        self.s3.get(class).or_else(|| self.s3.get("STANDARD")).copied().unwrap_or(0.023)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_parses_and_prices_nodes() {
        let m = PriceModel::parse(DEFAULT, "default").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.node_hourly(Some("m5.xlarge"), 4.0, 16.0), (0.192, true));
        let (p, known) = m.node_hourly(Some("unknown"), 4.0, 8.0);
        assert!(!known && (p - (4.0 * 0.031611 + 8.0 * 0.004237)).abs() < 1e-9);
    }

    #[test]
    fn a_malformed_model_names_line_and_key() {
        let bad = DEFAULT.replace("hourly: 0.192}", "hourly: cheap}");
        let e = PriceModel::parse(&bad, "p.yaml").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("p.yaml:") && e.contains("m5.xlarge"), "{e}");
        let neg = DEFAULT.replace("gp3: 0.08", "gp3: -1");
        let e = PriceModel::parse(&neg, "p.yaml").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("gp3"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics(text in "\\PC{0,300}") {
            let _ = PriceModel::parse(&text, "fuzz");
        }
    }
}
