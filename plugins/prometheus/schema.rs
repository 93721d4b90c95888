//! `prometheus`'s config (Kong 3.9.3's `kong/plugins/prometheus/schema.lua`): which metric
//! families an instance records. All are off by default; a family is exported only once an
//! instance that enables it has seen a request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "prometheus",
    priority: 13,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("per_consumer", FieldType::Boolean).default("false"),
        FieldDecl::new("status_code_metrics", FieldType::Boolean).default("false"),
        FieldDecl::new("ai_metrics", FieldType::Boolean).default("false"),
        FieldDecl::new("latency_metrics", FieldType::Boolean).default("false"),
        FieldDecl::new("bandwidth_metrics", FieldType::Boolean).default("false"),
        FieldDecl::new("upstream_health_metrics", FieldType::Boolean).default("false"),
    ],
    example: r#"{"status_code_metrics": true}"#,
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    #[serde(default)]
    pub per_consumer: bool,
    #[serde(default)]
    pub status_code_metrics: bool,
    #[serde(default)]
    pub ai_metrics: bool,
    #[serde(default)]
    pub latency_metrics: bool,
    #[serde(default)]
    pub bandwidth_metrics: bool,
    #[serde(default)]
    pub upstream_health_metrics: bool,
}

impl PrometheusConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: PrometheusConfig = parse_typed(config)?;
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    #[test]
    fn every_flag_is_off_by_default() {
        assert_eq!(
            validate("prometheus", None).unwrap(),
            json!({"per_consumer": false, "status_code_metrics": false, "ai_metrics": false,
                   "latency_metrics": false, "bandwidth_metrics": false,
                   "upstream_health_metrics": false})
        );
    }
}
