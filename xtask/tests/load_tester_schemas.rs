//! load-tester's configuration files keep their published contract: the
//! committed schemas under docs/load-tester/ are the ones the types generate,
//! the built-in scenario validates against its schema, and a file the tool
//! would reject for its shape (an unknown key) is rejected by the schema too.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use jsonschema::Validator;
use serde_json::Value;

/// The committed file, byte for byte as `cargo xtask schema` writes it.
fn committed(file: &str) -> String {
    let path = xtask::workspace::root().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn as_written(schema: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(schema).unwrap())
}

fn scenario_validator() -> Validator {
    let schema: Value = serde_json::from_str(&committed("docs/load-tester/scenario.schema.json"))
        .expect("the committed scenario schema is JSON");
    jsonschema::validator_for(&schema).expect("the scenario schema is a valid JSON Schema")
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

fn problems(validator: &Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

#[test]
fn committed_schemas_match_the_load_tester_types() {
    for (file, generated) in [
        ("docs/load-tester/scenario.schema.json", load_tester::scenario_schema()),
        ("docs/load-tester/metric-mapping.schema.json", load_tester::metric_mapping_schema()),
    ] {
        assert!(
            committed(file) == as_written(&generated),
            "{file} is stale: run `cargo xtask schema`"
        );
    }
}

#[test]
fn the_built_in_scenario_validates_against_the_scenario_schema() {
    let built_in = yaml(load_tester::scenario::DEFAULT_SCENARIO);
    let problems = problems(&scenario_validator(), &built_in);
    assert!(problems.is_empty(), "the built-in scenario breaks the schema: {problems:#?}");
}

#[test]
fn the_documented_scenario_example_validates() {
    // The example of docs/load-tester.md, which the tool accepts as well.
    let example = yaml(
        r#"
name: checkout
think_time: 500ms..1500ms
headers: { X-Device-Fingerprint: "lt-{{user}}" }
feeds:
  nft_id: { range: [1, 100] }
  term: { choice: [ape, punk] }
  wallet: { csv: wallets.csv, order: random }
thresholds: ["p95 < 400ms"]
scenarios:
  - name: browse
    weight: 3
    transactions:
      - name: view nft
        request: { method: GET, path: "/api/nfts/{{nft_id}}" }
        expect_status: [200]
        thresholds: ["p95 < 200ms"]
        think_time: 2s
        weight: 2
      - name: nft graphql
        graphql:
          query: "query($id: Int!) { nft(id: $id) { name } }"
          variables: { id: "{{nft_id}}" }
  - name: collector
    transactions:
      - name: sign in
        on_start: true
        siwe: {}
        extract: { token: /token }
      - name: me
        request: { path: /api/me, headers: { Authorization: "Bearer {{token}}" } }
"#,
    );
    let problems = problems(&scenario_validator(), &example);
    assert!(problems.is_empty(), "the documented example breaks the schema: {problems:#?}");
}

#[test]
fn a_scenario_with_an_unknown_key_is_rejected() {
    let validator = scenario_validator();
    let misspelt = "scenarios:
  - name: a
    transactions:
      - name: x
        reqest: { path: / }
";
    let top_level = "scenario: []
scenarios:
  - name: a
    transactions:
      - name: x
        request: { path: / }
";
    for text in [misspelt, top_level] {
        assert!(!validator.is_valid(&yaml(text)), "the schema accepts {text}");
        // The tool rejects it as well.
        let err = load_tester::scenario::ScenarioPlan::from_yaml(
            text,
            "s.yaml",
            std::path::Path::new("."),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

#[test]
fn metric_mapping_schema_accepts_partial_mappings_and_rejects_unknown_keys() {
    let schema: Value =
        serde_json::from_str(&committed("docs/load-tester/metric-mapping.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let partial = yaml("cache_hits: redis_keyspace_hits_total\npool_max: pgbouncer_max\n");
    assert!(problems(&validator, &partial).is_empty());
    assert!(!validator.is_valid(&yaml("cache_hit: redis_keyspace_hits_total\n")));
    assert!(!validator.is_valid(&yaml("pool_max: 20\n")), "series names are strings");
}
