//! alert-linter's and reorg-sim's configuration files keep their published
//! contract: the committed schemas are the ones the types generate, they are
//! valid JSON Schemas, and real files of each kind validate against them
//! while a misspelt key does not.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use serde_json::Value;

fn committed(file: &str) -> String {
    let path = xtask::workspace::root().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(file: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&committed(file)).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn committed_schemas_match_the_types() {
    for (file, generated) in [
        ("docs/alert-linter/config.schema.json", alert_linter::config_schema()),
        ("docs/reorg-sim/scenario.schema.json", reorg_sim::scenario_schema()),
        ("docs/reorg-sim/mapping.schema.json", reorg_sim::mapping_schema()),
    ] {
        let text = format!("{}\n", serde_json::to_string_pretty(&generated).unwrap());
        assert_eq!(committed(file), text, "{file} is stale: run `cargo xtask schema`");
    }
}

#[test]
fn a_reorg_scenario_file_validates_and_a_misspelt_key_does_not() {
    let v = validator("docs/reorg-sim/scenario.schema.json");
    for name in ["launch-plan", "shallow", "medium", "deep", "extreme", "lagging-rpc"] {
        let scenario = reorg_sim::scenario::ReorgScenario::builtin(name)
            .unwrap_or_else(|| panic!("built-in scenario {name}"));
        let value = serde_json::to_value(&scenario).unwrap();
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    let mut bad =
        serde_json::to_value(reorg_sim::scenario::ReorgScenario::builtin("shallow").unwrap())
            .unwrap();
    bad.as_object_mut().unwrap().insert("nmae".into(), "typo".into());
    assert!(!v.is_valid(&bad));
}

#[test]
fn the_default_alert_linter_config_validates() {
    let v = validator("docs/alert-linter/config.schema.json");
    let empty: Value = serde_json::json!({});
    assert!(v.is_valid(&empty), "every key is optional");
    let typo: Value = serde_json::json!({ "policyy": {} });
    assert!(!v.is_valid(&typo));
}
