//! The database step: how long the application's statements take, read from
//! `pg_stat_statements` (the KPI "database query time < 100 ms" and the
//! launch plan's query-optimisation checks: no query slower than 1 s, every
//! index used). It only reads; it never creates the extension or resets
//! statistics on a system it was pointed at.

use std::time::Duration;

use shared_types::pg::PgConnectOptions;
use shared_types::{Check, Measurement, Report};

/// A statement's statistics, as pg_stat_statements keeps them.
#[derive(Debug, Clone)]
struct Statement {
    query: String,
    calls: i64,
    total_ms: f64,
    mean_ms: f64,
    max_ms: f64,
}

/// The slowest a statement may be on average (the launch plan's "no query
/// slower than 1 s").
const SLOW_MS: f64 = 1000.0;

/// Connects to `url` (its `sslmode` and `sslrootcert` honoured); the error
/// names the host and the reason.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let options = PgConnectOptions::parse(url).map_err(|e| e.to_string())?;
    options.connect(Duration::from_secs(10)).await.map_err(|e| e.to_string())
}

/// Reads the database at `url` into a report of tool `database`.
pub async fn run(url: &str) -> Report {
    let target = shared_types::redact_url(url);
    let mut report = Report::new("database", env!("CARGO_PKG_VERSION"), target.as_str());
    let criterion = "statement statistics are read from pg_stat_statements";
    let client = match connect(url).await {
        Ok(client) => client,
        Err(e) => {
            report.push_check(Check::error("statements", criterion, e));
            report.finish();
            return report;
        }
    };
    let statements = match read_statements(&client).await {
        Ok(s) => s,
        Err(why) => {
            report.push_check(Check::not_evaluated("statements", criterion, why));
            report.finish();
            return report;
        }
    };
    let calls: i64 = statements.iter().map(|s| s.calls).sum();
    if calls == 0 {
        report.push_check(Check::not_evaluated(
            "statements",
            criterion,
            "pg_stat_statements holds no call of this database's statements yet: run traffic first",
        ));
        report.finish();
        return report;
    }
    report.push_check(Check::pass(
        "statements",
        criterion,
        format!("{} statements, {calls} calls", statements.len()),
    ));
    let total: f64 = statements.iter().map(|s| s.total_ms).sum();
    let mean = total / calls as f64;
    let p95 = weighted_p95(&statements);
    let slowest = statements.iter().max_by(|a, b| a.mean_ms.total_cmp(&b.mean_ms)).cloned();
    let slow: Vec<&Statement> = statements.iter().filter(|s| s.mean_ms > SLOW_MS).collect();
    let criterion = "no query slower than 1 s (mean execution per statement)";
    let shown = |s: &Statement| {
        format!(
            "{:.1} ms mean, {:.1} ms max over {} calls: {}",
            s.mean_ms,
            s.max_ms,
            s.calls,
            one_line(&s.query)
        )
    };
    let check = match (&slowest, slow.is_empty()) {
        (Some(s), true) => {
            Check::pass("slow-queries", criterion, format!("slowest {:.1} ms", s.mean_ms))
                .with_detail(format!("slowest: {}", shown(s)))
        }
        (_, false) => {
            Check::fail("slow-queries", criterion, format!("{} statement(s) over 1 s", slow.len()))
                .with_detail(slow.iter().take(5).map(|s| shown(s)).collect::<Vec<_>>().join("\n"))
        }
        (None, true) => Check::not_evaluated("slow-queries", criterion, "no statement"),
    };
    report.push_check(check);
    report.push_check(index_check(&client).await);
    for (name, value, unit) in [
        ("query_time_mean", mean, "ms"),
        ("query_time_p95", p95, "ms"),
        ("query_time_slowest", slowest.as_ref().map_or(f64::NAN, |s| s.mean_ms), "ms"),
        ("calls", calls as f64, ""),
        ("statements", statements.len() as f64, ""),
    ] {
        report.push_measurement(Measurement::new(name, value, unit));
    }
    let top: Vec<serde_json::Value> = {
        let mut sorted = statements.clone();
        sorted.sort_by(|a, b| b.mean_ms.total_cmp(&a.mean_ms));
        sorted
            .iter()
            .take(10)
            .map(|s| {
                serde_json::json!({
                    "query": one_line(&s.query), "calls": s.calls,
                    "mean_ms": s.mean_ms, "max_ms": s.max_ms, "total_ms": s.total_ms,
                })
            })
            .collect()
    };
    report.data.insert("slowest_statements".to_owned(), serde_json::Value::from(top));
    report.finish();
    report
}

fn one_line(query: &str) -> String {
    let flat: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 240 {
        let cut: String = flat.chars().take(237).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

/// The 95th percentile of execution time over calls, from each statement's
/// mean (pg_stat_statements keeps no per-call distribution).
fn weighted_p95(statements: &[Statement]) -> f64 {
    let mut sorted: Vec<&Statement> = statements.iter().filter(|s| s.calls > 0).collect();
    sorted.sort_by(|a, b| a.mean_ms.total_cmp(&b.mean_ms));
    let calls: i64 = sorted.iter().map(|s| s.calls).sum();
    let rank = (calls as f64 * 0.95).ceil() as i64;
    let mut seen = 0;
    for s in &sorted {
        seen += s.calls;
        if seen >= rank {
            return s.mean_ms;
        }
    }
    f64::NAN
}

async fn read_statements(client: &tokio_postgres::Client) -> Result<Vec<Statement>, String> {
    let installed = client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'", &[])
        .await
        .map_err(|e| format!("cannot read pg_extension: {e}"))?;
    if installed.is_none() {
        return Err("the pg_stat_statements extension is not installed in this database: add \
                    pg_stat_statements to shared_preload_libraries and run CREATE EXTENSION \
                    pg_stat_statements"
            .to_owned());
    }
    // The statements of this database, not the statistics views' own reads.
    let rows = client
        .query(
            "SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND calls > 0 AND query !~* 'pg_stat_|pg_extension|pg_catalog\\.' ",
            &[],
        )
        .await
        .map_err(|e| {
            format!(
                "cannot read pg_stat_statements ({}): is it in shared_preload_libraries?",
                shared_types::pg::error_chain(&e)
            )
        })?;
    rows.iter()
        .map(|row| {
            let get = |i: usize, name: &str| -> Result<f64, String> {
                row.try_get::<_, f64>(i).map_err(|e| format!("pg_stat_statements.{name}: {e}"))
            };
            Ok(Statement {
                query: row.try_get(0).map_err(|e| format!("pg_stat_statements.query: {e}"))?,
                calls: row.try_get(1).map_err(|e| format!("pg_stat_statements.calls: {e}"))?,
                total_ms: get(2, "total_exec_time")?,
                mean_ms: get(3, "mean_exec_time")?,
                max_ms: get(4, "max_exec_time")?,
            })
        })
        .collect()
}

/// Tables smaller than this are not judged for index use: on them the
/// planner rightly prefers a sequential scan, so an unscanned index says
/// nothing about the index.
const JUDGED_TABLE_BYTES: i64 = 1024 * 1024;

/// Every index that is not there to enforce a constraint has been scanned.
async fn index_check(client: &tokio_postgres::Client) -> Check {
    let criterion = "every index used (idx_scan > 0; unique and primary-key indexes enforce \
                     constraints, and tables under 1 MiB are read by sequential scans: neither \
                     is judged)";
    let rows = match client
        .query(
            "SELECT s.schemaname::text, s.relname::text, s.indexrelname::text, s.idx_scan, \
                    pg_relation_size(s.relid) \
             FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
             WHERE NOT i.indisunique AND NOT i.indisprimary ORDER BY 1, 2, 3",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return Check::error(
                "indexes",
                criterion,
                format!("cannot read pg_stat_user_indexes: {e}"),
            );
        }
    };
    let (mut judged, mut unused, mut small) = (0, Vec::new(), Vec::new());
    for row in &rows {
        let text = |i: usize| row.try_get::<_, String>(i).unwrap_or_default();
        let scans: i64 = row.try_get(3).unwrap_or(0);
        let bytes: i64 = row.try_get(4).unwrap_or(0);
        let name = format!("{}.{} on {}", text(0), text(2), text(1));
        if bytes < JUDGED_TABLE_BYTES {
            small.push(format!("{name} ({} kB)", bytes / 1024));
        } else {
            judged += 1;
            if scans == 0 {
                unused.push(name);
            }
        }
    }
    let not_judged = if small.is_empty() {
        String::new()
    } else {
        format!("; not judged (table under 1 MiB): {}", small.join(", "))
    };
    if judged == 0 {
        return Check::skipped("indexes", criterion, format!("no index to judge{not_judged}"));
    }
    if unused.is_empty() {
        Check::pass("indexes", criterion, format!("{judged} judged, all scanned"))
            .with_detail(format!("every judged index scanned{not_judged}"))
    } else {
        Check::fail("indexes", criterion, format!("{} of {judged} never scanned", unused.len()))
            .with_detail(format!(
                "never scanned since the statistics were reset: {}{not_judged}",
                unused.join(", ")
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(mean: f64, calls: i64) -> Statement {
        Statement {
            query: String::new(),
            calls,
            total_ms: mean * calls as f64,
            mean_ms: mean,
            max_ms: mean,
        }
    }

    #[test]
    fn the_p95_is_weighted_by_calls() {
        assert_eq!(weighted_p95(&[s(1.0, 95), s(500.0, 5)]), 1.0);
        assert_eq!(weighted_p95(&[s(1.0, 94), s(500.0, 6)]), 500.0);
        assert!(weighted_p95(&[]).is_nan());
    }
}
