//! [`ReorgScenario`]: what chain to build, which reorgs to inject, and what
//! the indexer must do (converge, or halt safely). Scenarios come from YAML
//! files or the built-ins ([`ReorgScenario::builtin`]), and
//! [`ReorgScenario::random`] generates random reorg sequences for property
//! tests.
//!
//! ```yaml
//! name: launch-plan
//! chain: { chain_id: 137, start_block: 1000, block_time_secs: 2, finality_depth: 64, seed: 7 }
//! steps:
//!   - extend: { to: 1100, events: { mints: 10 } }
//!   - reorg: { depth: 50, new_head: 1150, drop: 0.3, shift: 3, events: { mints: 3, transfers: 3 } }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainConfig, ReorgSpec};
use crate::simulator::LagConfig;
use crate::workload::{EventCounts, SeededRng};

// With the `schema` feature the scenario file's types (these, and
// `ChainConfig`, `ReorgSpec`, `LagConfig`, `EventCounts`, `WorkloadShape`
// they hold) derive the JSON Schema of `crate::scenario_schema`; their doc
// comments are its descriptions. The YAML form is the serde form: no field
// needs `schemars(with)`.

/// How fast blocks appear.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Pace {
    /// Every step's blocks at once.
    #[default]
    Fast,
    /// One block per `block_time_secs` during `extend` steps.
    Realtime,
}

/// What the indexer under test must end with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Expectation {
    /// Equal to the oracle at the final head, every reorg recorded.
    #[default]
    Converge,
    /// Stopped at the last reorg (deeper than finality) with its data as before it.
    Halt,
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Step {
    /// Append blocks up to `to` carrying `events`.
    Extend {
        /// New head.
        to: u64,
        /// Events spread over the new blocks.
        #[serde(default)]
        events: EventCounts,
    },
    /// Replace the last `depth` blocks.
    Reorg(ReorgSpec),
}

/// A reorg experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReorgScenario {
    /// Name used in reports.
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// Chain parameters (the indexer's finality window is `finality_depth`).
    #[serde(default)]
    pub chain: ChainConfig,
    /// A lagging node behind the load balancer.
    #[serde(default)]
    pub lag: LagConfig,
    /// How fast blocks appear.
    #[serde(default)]
    pub pace: Pace,
    /// What the indexer must end with.
    #[serde(default)]
    pub expect: Expectation,
    /// Wait for the indexer to catch up after every step (default true).
    #[serde(default = "yes")]
    pub wait_between_steps: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

/// A scenario that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// Not a built-in name and not a readable file.
    #[error("unknown scenario {0:?}: use one of {names} or a YAML file path", names = BUILTIN_NAMES.join(", "))]
    Unknown(String),
    /// The file cannot be read.
    #[error("cannot read scenario file {path}: {detail}")]
    Io {
        /// File.
        path: String,
        /// Why.
        detail: String,
    },
    /// YAML error (with line and column).
    #[error("scenario file {path}: {detail}")]
    Yaml {
        /// File.
        path: String,
        /// Parser message with its position.
        detail: String,
    },
    /// Steps that contradict each other.
    #[error("scenario {name}: {detail}")]
    Invalid {
        /// Scenario.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

/// Names of the built-in scenarios.
pub const BUILTIN_NAMES: [&str; 6] =
    ["launch-plan", "shallow", "medium", "deep", "extreme", "lagging-rpc"];

fn extend(to: u64, events: EventCounts) -> Step {
    Step::Extend { to, events }
}

fn reorg(depth: u64, longer_by: u64, events: EventCounts) -> Step {
    Step::Reorg(ReorgSpec {
        depth,
        longer_by: Some(longer_by),
        drop: 0.3,
        shift: 2,
        events,
        ..ReorgSpec::default()
    })
}

fn counts(mints: u32, transfers: u32, burns: u32, batches: u32, uris: u32) -> EventCounts {
    EventCounts { mints, transfers, burns, batches, uris }
}

impl ReorgScenario {
    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Option<ReorgScenario> {
        let chain = ChainConfig::default();
        let busy = counts(40, 30, 8, 8, 4);
        let some = counts(6, 6, 2, 2, 1);
        let (description, steps, expect, lag) = match name {
            "launch-plan" => (
                "the launch plan: index 1000-1100 with 10 mints, reorg at 1050 of depth 50, new branch to 1150",
                vec![
                    extend(1100, counts(10, 0, 0, 0, 0)),
                    Step::Reorg(ReorgSpec {
                        depth: 50,
                        new_head: Some(1150),
                        drop: 0.3,
                        shift: 3,
                        events: counts(3, 3, 0, 0, 0),
                        longer_by: None,
                    }),
                ],
                Expectation::Converge,
                LagConfig::default(),
            ),
            "shallow" => (
                "reorgs of depth 1, 3 and 5 on a busy chain",
                vec![
                    extend(1060, busy),
                    reorg(1, 1, some),
                    extend(1070, some),
                    reorg(3, 2, some),
                    extend(1080, some),
                    reorg(5, 3, some),
                ],
                Expectation::Converge,
                LagConfig::default(),
            ),
            "medium" => (
                "reorgs of depth 10, 20 and 30",
                vec![
                    extend(1100, busy),
                    reorg(10, 2, some),
                    extend(1120, some),
                    reorg(20, 5, some),
                    extend(1140, some),
                    reorg(30, 1, some),
                ],
                Expectation::Converge,
                LagConfig::default(),
            ),
            "deep" => (
                "reorgs of depth 50 and 64 (the finality window, still followed)",
                vec![
                    extend(1100, busy),
                    reorg(50, 10, some),
                    extend(1180, some),
                    reorg(64, 2, some),
                ],
                Expectation::Converge,
                LagConfig::default(),
            ),
            "extreme" => (
                "a reorg of depth 80, beyond the 64-block finality window: the indexer must halt and keep its data",
                vec![extend(1100, busy), reorg(80, 10, some)],
                Expectation::Halt,
                LagConfig::default(),
            ),
            "lagging-rpc" => (
                "every 2nd request answered by a node 6 blocks behind: stale heads and missing blocks must not look like reorgs",
                vec![
                    extend(1040, busy),
                    extend(1080, some),
                    extend(1120, some),
                    extend(1160, some),
                ],
                Expectation::Converge,
                LagConfig { every: 2, blocks: 6 },
            ),
            _ => return None,
        };
        Some(ReorgScenario {
            name: name.to_owned(),
            description: description.to_owned(),
            chain,
            lag,
            pace: Pace::Fast,
            expect,
            wait_between_steps: true,
            steps,
        })
    }

    /// A built-in name or a YAML file.
    pub fn load(name_or_path: &str) -> Result<ReorgScenario, ScenarioError> {
        if let Some(s) = Self::builtin(name_or_path) {
            return Ok(s);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(ScenarioError::Unknown(name_or_path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Io {
            path: name_or_path.to_owned(),
            detail: e.to_string(),
        })?;
        let scenario = Self::from_yaml(&text).map_err(|e| match e {
            ScenarioError::Yaml { detail, .. } => {
                ScenarioError::Yaml { path: name_or_path.to_owned(), detail }
            }
            other => other,
        })?;
        Ok(scenario)
    }

    /// Parses YAML and checks the steps.
    pub fn from_yaml(text: &str) -> Result<ReorgScenario, ScenarioError> {
        let scenario: ReorgScenario = serde_saphyr::from_str(text).map_err(|e| {
            ScenarioError::Yaml { path: "<yaml>".to_owned(), detail: e.to_string() }
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks that the steps can be played on the chain.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid =
            |detail: String| Err(ScenarioError::Invalid { name: self.name.clone(), detail });
        let mut head = self.chain.start_block;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Extend { to, .. } if *to < head => {
                    return invalid(format!(
                        "step {}: extend to {to} is below the head {head}",
                        i + 1
                    ));
                }
                Step::Extend { to, .. } => head = *to,
                Step::Reorg(spec) => {
                    if spec.depth == 0 || spec.depth > head - self.chain.start_block {
                        return invalid(format!(
                            "step {}: reorg depth {} must be 1..={} at head {head}",
                            i + 1,
                            spec.depth,
                            head - self.chain.start_block
                        ));
                    }
                    if !(0.0..=1.0).contains(&spec.drop) {
                        return invalid(format!(
                            "step {}: drop {} must be within 0..=1",
                            i + 1,
                            spec.drop
                        ));
                    }
                    head = resolve_new_head(spec, head);
                    if head <= self.chain.start_block {
                        return invalid(format!(
                            "step {}: the new branch ends below the start block",
                            i + 1
                        ));
                    }
                }
            }
        }
        if self.expect == Expectation::Halt
            && !matches!(self.steps.last(), Some(Step::Reorg(spec)) if spec.depth > self.chain.finality_depth)
        {
            return invalid(format!(
                "expect: halt needs a last step reorg deeper than finality_depth {}",
                self.chain.finality_depth
            ));
        }
        Ok(())
    }

    /// A random sequence of `reorgs` reorgs (depth 1..=finality) with
    /// extensions between them, for property tests.
    pub fn random(seed: u64, reorgs: usize) -> ReorgScenario {
        let mut rng = SeededRng::new(seed);
        let mut chain = ChainConfig { seed, ..ChainConfig::default() };
        chain.finality_depth = 16;
        let start = chain.start_block;
        let mut head = start + 20 + rng.below(20);
        let mut steps = vec![extend(head, counts(10 + rng.below(10) as u32, 8, 2, 2, 1))];
        for _ in 0..reorgs {
            let depth = rng.between(1, chain.finality_depth.min(head - start));
            let longer_by = rng.below(4); // 0: a shorter or equal branch is possible
            let new_head = (head - depth + 1).max(head + longer_by - rng.below(2) * depth / 2);
            let events = counts(
                rng.below(4) as u32,
                rng.below(4) as u32,
                rng.below(2) as u32,
                rng.below(2) as u32,
                rng.below(2) as u32,
            );
            steps.push(Step::Reorg(ReorgSpec {
                depth,
                new_head: Some(new_head),
                longer_by: None,
                drop: 0.5,
                shift: rng.below(3),
                events,
            }));
            head = new_head;
            if rng.chance(0.5) {
                head += rng.between(1, 5);
                steps.push(extend(head, counts(rng.below(3) as u32, rng.below(3) as u32, 0, 0, 0)));
            }
        }
        ReorgScenario {
            name: format!("random-{seed}"),
            description: format!("{reorgs} random reorgs from seed {seed}"),
            chain,
            lag: LagConfig::default(),
            pace: Pace::Fast,
            expect: Expectation::Converge,
            wait_between_steps: true,
            steps,
        }
    }
}

/// The head a reorg ends at when applied at `head`.
pub fn resolve_new_head(spec: &ReorgSpec, head: u64) -> u64 {
    spec.new_head.unwrap_or(head + spec.longer_by.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_valid() {
        for name in BUILTIN_NAMES {
            let scenario = ReorgScenario::builtin(name).unwrap();
            scenario.validate().unwrap();
        }
    }

    #[test]
    fn random_scenarios_are_valid() {
        for seed in 0..200 {
            ReorgScenario::random(seed, 4).validate().unwrap();
        }
    }

    #[test]
    fn yaml_scenarios_parse_and_errors_name_the_line() {
        let yaml = "name: mine\nsteps:\n  - extend: { to: 1010, events: { mints: 2 } }\n  - reorg: { depth: 3, new_head: 1012 }\n";
        let s = ReorgScenario::from_yaml(yaml).unwrap();
        assert_eq!(s.steps.len(), 2);
        let err =
            ReorgScenario::from_yaml("name: x\nsteps:\n  - extend: { to: 1010, colour: red }\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("colour") && err.contains('3'), "{err}");
        let err = ReorgScenario::from_yaml("name: x\nsteps:\n  - reorg: { depth: 5 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("depth 5"), "{err}");
    }
}
