//! Development and operations tasks for the postlaunch workspace, run as
//! `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! Only xtask knows that the tools exist together: `verify` starts the sandbox,
//! runs each tool against it and merges their reports into one.

pub mod bench;
mod bench_backup;
mod bench_bluegreen;
mod bench_chaos;
mod bench_cost;
mod bench_load;
mod database_step;
pub mod kpi;
pub mod plan;
pub mod tools;
pub mod verify;
pub mod workspace;
