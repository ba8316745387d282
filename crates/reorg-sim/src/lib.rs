//! Does the indexer detect, roll back and re-index chain reorganisations of
//! 1..64 blocks, and stop safely beyond? `reorg-sim` answers it by checking
//! the indexer's database against a clean replay of the canonical chain.
//!
//! The parts, each usable alone:
//!
//! - [`simulator::ChainSimulator`]: an Ethereum JSON-RPC node on loopback
//!   (HTTP and WebSocket `eth_subscribe`) serving a [`chain::SimulatedChain`]:
//!   keccak256-of-RLP block hashes, parent links, ERC-1155
//!   `TransferSingle`/`TransferBatch`/`URI` logs from a seeded
//!   [`workload::Workload`], reorgs injected on demand, an optional lagging node.
//! - [`scenario::ReorgScenario`]: YAML or built-in experiments (launch plan,
//!   shallow, medium, deep, extreme, lagging RPC) and random reorg sequences.
//! - [`oracle::CanonicalOracle`]: balances, supply, per-collection statistics
//!   at any head by clean replay; the reorg history with the NFTs affected.
//! - [`indexer::ReferenceIndexer`]: a reorg-aware ERC-1155 indexer on
//!   PostgreSQL (also `reorg-sim index`), with a deliberately faulty
//!   `no_rollback` mode to prove the verifier catches what it should.
//! - [`verify`]: compares any indexer's database (through SQL in a
//!   [`verify::Mapping`]) with the oracle; [`runner::run_scenario`] plays a
//!   scenario end to end and returns the shared [`shared_types::Report`].
//!
//! # Criteria (checks of the report)
//!
//! | check | criterion |
//! |---|---|
//! | `indexer-head` | indexer head == canonical head (or the last consistent head when halted) |
//! | `no-duplicate-events` | no event stored twice |
//! | `no-stale-rows` | no block or event of an orphaned branch |
//! | `no-missing-events` | every canonical event stored |
//! | `balances-match` | balances per (contract, token, owner) equal the oracle's |
//! | `collection-stats-match` | holders, supply, transfers per collection equal the oracle's |
//! | `reorgs-recorded` | every reorg recorded with its common ancestor and depth, no false reorg |
//! | `affected-nfts-listed` | the NFTs with events in orphaned blocks, exactly |
//! | `detection-delay` | a reorg detected within 1 block |
//! | `halted-safely` | (reorgs beyond finality) the indexer halted with its data intact |
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use reorg_sim::runner::{RunOptions, run_scenario};
//! use reorg_sim::scenario::ReorgScenario;
//!
//! let scenario = ReorgScenario::builtin("launch-plan").expect("built-in");
//! let report = run_scenario(&scenario, &RunOptions::new("postgres://postgres@127.0.0.1/postgres")).await?;
//! assert_eq!(report.exit_code().code(), 0);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod chain;
pub mod erc1155;
pub mod indexer;
pub mod node;
pub mod oracle;
pub mod reset;
pub mod rpc;
pub mod runner;
pub mod scenario;
pub mod simulator;
pub mod verify;
pub mod workload;

/// The JSON Schema of a scenario file (`reorg-sim run --scenario FILE.yaml`),
/// for `docs/reorg-sim/scenario.schema.json`. It checks the file's shape
/// (keys, types, enums); what only the whole file can tell (each reorg fits
/// the chain at that step, `expect: halt` ends with a reorg deeper than
/// finality) is left to [`scenario::ReorgScenario::validate`].
#[cfg(feature = "schema")]
pub fn scenario_schema() -> serde_json::Value {
    published(
        schemars::schema_for!(scenario::ReorgScenario),
        "https://postlaunch.dev/schemas/reorg-sim/scenario.schema.json",
        "reorg-sim scenario",
        "A reorg experiment: the simulated chain, the steps (extend the chain, inject a reorg) \
         and what the indexer under test must end with. Keys left out keep their defaults; \
         unknown keys are errors.",
    )
}

/// The JSON Schema of an SQL mapping file (`--mapping FILE`), for
/// `docs/reorg-sim/mapping.schema.json`.
#[cfg(feature = "schema")]
pub fn mapping_schema() -> serde_json::Value {
    published(
        schemars::schema_for!(verify::Mapping),
        "https://postlaunch.dev/schemas/reorg-sim/mapping.schema.json",
        "reorg-sim mapping",
        "SQL queries that read an indexer's state for the verifier. Every column must be text \
         (cast with ::text; hashes and addresses as hex, encode(x, 'hex')). `reorgs` and \
         `affected_nfts` are optional; unknown keys are errors.",
    )
}

/// A generated schema with its `$id`, title and description, as JSON with
/// every object's keys sorted: the committed files must not depend on whether
/// some crate in the build turned on serde_json's `preserve_order`.
#[cfg(feature = "schema")]
fn published(
    mut schema: schemars::Schema,
    id: &str,
    title: &str,
    description: &str,
) -> serde_json::Value {
    schema.insert("$id".to_owned(), id.into());
    schema.insert("title".to_owned(), title.into());
    schema.insert("description".to_owned(), description.into());
    shared_types::sorted_keys(schema.to_value())
}

#[cfg(all(test, feature = "schema"))]
mod schema_tests {
    use serde_json::Value;

    use super::*;
    use crate::scenario::{BUILTIN_NAMES, ReorgScenario};
    use crate::verify::Mapping;

    /// Where `value` breaks `schema`, as `path: what` lines. A small checker
    /// for the keywords schemars emits for these types (`$ref` into `$defs`,
    /// `type`, `const`, `enum`, `oneOf`/`anyOf`, `properties`, `required`,
    /// `additionalProperties: false`, `items`, `minimum`/`maximum`).
    fn violations(value: &Value, schema: &Value, root: &Value, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Some(schema) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                out.push(format!("{path}: not allowed"));
            }
            return out;
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.strip_prefix("#/$defs/").expect("local $ref");
            let target = &root["$defs"][name];
            assert!(!target.is_null(), "{path}: dangling $ref {reference}");
            out.extend(violations(value, target, root, path));
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let fits = |t: &str| match t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_u64() || value.is_i64(),
                "number" => value.is_number(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => false,
            };
            if !types.iter().any(|t| fits(t)) {
                out.push(format!("{path}: {value} is not of type {types:?}"));
            }
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            out.push(format!("{path}: {value} is not {expected}"));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            out.push(format!("{path}: {value} is not one of {options:?}"));
        }
        for keyword in ["oneOf", "anyOf"] {
            if let Some(branches) = schema.get(keyword).and_then(Value::as_array)
                && !branches.iter().any(|b| violations(value, b, root, path).is_empty())
            {
                out.push(format!("{path}: {value} matches no branch of {keyword}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                out.push(format!("{path}: {n} < minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                out.push(format!("{path}: {n} > maximum {max}"));
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, item) in object {
                match properties.and_then(|p| p.get(key)) {
                    Some(property) => {
                        out.extend(violations(item, property, root, &format!("{path}.{key}")));
                    }
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        out.push(format!("{path}: unknown key {key:?}"));
                    }
                    None => {}
                }
            }
            for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let key = key.as_str().expect("required keys are strings");
                if !object.contains_key(key) {
                    out.push(format!("{path}: missing required key {key:?}"));
                }
            }
        }
        if let (Some(items), Some(schema_items)) = (value.as_array(), schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                out.extend(violations(item, schema_items, root, &format!("{path}[{i}]")));
            }
        }
        out
    }

    fn assert_fits(value: &Value, schema: &Value, what: &str) {
        let properties = schema["properties"].as_object().expect("top-level properties");
        for key in value.as_object().expect("an object").keys() {
            assert!(
                properties.contains_key(key),
                "{what}: top-level key {key:?} not in the schema"
            );
        }
        let errors = violations(value, schema, schema, "$");
        assert!(errors.is_empty(), "{what} does not fit its schema:\n{}", errors.join("\n"));
    }

    /// The documented example of a scenario file (the `scenario` module's docs).
    const EXAMPLE_YAML: &str = "\
name: launch-plan
chain: { chain_id: 137, start_block: 1000, block_time_secs: 2, finality_depth: 64, seed: 7 }
steps:
  - extend: { to: 1100, events: { mints: 10 } }
  - reorg: { depth: 50, new_head: 1150, drop: 0.3, shift: 3, events: { mints: 3, transfers: 3 } }
";

    #[test]
    fn both_schemas_are_objects_with_id_and_title() {
        for (schema, id) in [
            (scenario_schema(), "https://postlaunch.dev/schemas/reorg-sim/scenario.schema.json"),
            (mapping_schema(), "https://postlaunch.dev/schemas/reorg-sim/mapping.schema.json"),
        ] {
            assert_eq!(schema["type"], "object", "{id}");
            assert_eq!(schema["$id"], id);
            assert!(schema["title"].as_str().is_some_and(|t| t.starts_with("reorg-sim ")), "{id}");
            assert!(schema["properties"].is_object(), "{id}");
        }
    }

    #[test]
    fn every_builtin_scenario_fits_the_scenario_schema() {
        let schema = scenario_schema();
        for name in BUILTIN_NAMES {
            let scenario = ReorgScenario::builtin(name).expect("built-in");
            let value = serde_json::to_value(&scenario).expect("serializable");
            assert_fits(&value, &schema, name);
        }
    }

    #[test]
    fn the_documented_yaml_example_fits_the_scenario_schema() {
        ReorgScenario::from_yaml(EXAMPLE_YAML).expect("the example is a valid scenario");
        let value: Value = serde_saphyr::from_str(EXAMPLE_YAML).expect("YAML");
        assert_fits(&value, &scenario_schema(), "the documented example");
    }

    #[test]
    fn the_default_mapping_fits_the_mapping_schema() {
        let value = serde_json::to_value(Mapping::reference("reorg_sim")).expect("serializable");
        assert_fits(&value, &mapping_schema(), "the reference mapping");
    }

    #[test]
    fn unknown_top_level_keys_are_refused_like_deny_unknown_fields() {
        // ReorgScenario and Mapping both have `deny_unknown_fields`.
        for schema in [scenario_schema(), mapping_schema()] {
            assert_eq!(schema["additionalProperties"], false, "{}", schema["$id"]);
        }
    }

    #[test]
    fn the_checker_rejects_what_loading_refuses() {
        // Guards the tests above against a checker that accepts anything.
        let schema = scenario_schema();
        for yaml in [
            "name: x\ncolour: red\nsteps: []\n",
            "name: x\nchain: { colour: red }\nsteps: []\n",
            "name: x\nsteps:\n  - extend: { to: 1010, colour: red }\n",
            "name: x\nsteps:\n  - reorg: { depth: 3, drop: 2.0 }\n",
            "name: x\npace: slow\nsteps: []\n",
            "description: no name\nsteps: []\n",
        ] {
            let value: Value = serde_saphyr::from_str(yaml).expect("YAML");
            assert!(!violations(&value, &schema, &schema, "$").is_empty(), "accepted: {yaml}");
        }
    }
}
