//! From observations to verdicts: the unavailability windows, what the
//! servers did, and the report with the launch plan's criteria.

use std::time::Duration;

use shared_types::{Check, Measurement, Quantity, Report, Threshold};

use crate::ledger::WriteKey;
use crate::ledger_check::LedgerCheck;
use crate::observe::ServerSample;
use crate::workload::{Attempt, AttemptKind, Outcome};

/// The criteria a run is judged by. Defaults: the launch plan's.
#[derive(Debug, Clone)]
pub struct Criteria {
    /// Longest write unavailability, e.g. `downtime < 30s`.
    pub downtime: Threshold,
    /// Longest read unavailability.
    pub read_downtime: Threshold,
    /// Sum of every write outage in the run (the launch plan's "total
    /// downtime"). Default `total_downtime < 30s`: the whole failover budget,
    /// however it is split into several outages.
    pub total_downtime: Threshold,
    /// Largest standby replay lag seen before the fault (the drill's first
    /// step; the whole run when watching). Default `lag_before < 1s`.
    pub lag_before: Threshold,
    /// Share of queries (writes and reads) that succeed from the fault's start
    /// to the end of the run (the whole run when watching). Default
    /// `success_rate >= 50%`: the outage itself fails every query, the rest
    /// of the window must make up for it.
    pub success_rate: Threshold,
    /// Acknowledged commits missing after the failover.
    pub lost: Threshold,
    /// Writes found more than once.
    pub duplicates: Threshold,
    /// Whether asynchronous replication is acceptable (it can lose commits).
    pub accept_async: bool,
}

/// Metrics `--threshold` may name.
pub const METRICS: [&str; 5] =
    ["downtime", "read_downtime", "total_downtime", "lost", "duplicates"];

impl Default for Criteria {
    fn default() -> Self {
        let parse = |text: &str| {
            text.parse::<Threshold>().unwrap_or_else(|e| panic!("built-in criterion {text}: {e}"))
        };
        Self {
            downtime: parse("downtime < 30s"),
            read_downtime: parse("read_downtime < 30s"),
            total_downtime: parse("total_downtime < 30s"),
            lag_before: parse("lag_before < 1s"),
            success_rate: parse("success_rate >= 50%"),
            lost: parse("lost == 0"),
            duplicates: parse("duplicates == 0"),
            accept_async: false,
        }
    }
}

impl Criteria {
    /// Replaces the criterion of the threshold's metric.
    pub fn set(&mut self, threshold: Threshold) -> Result<(), String> {
        let slot = match threshold.metric.as_str() {
            "downtime" => &mut self.downtime,
            "read_downtime" => &mut self.read_downtime,
            "total_downtime" => &mut self.total_downtime,
            "lag_before" => &mut self.lag_before,
            "success_rate" => &mut self.success_rate,
            "lost" => &mut self.lost,
            "duplicates" => &mut self.duplicates,
            other => {
                return Err(format!(
                    "unknown metric {other:?} in --threshold; known: {}",
                    METRICS.join(", ")
                ));
            }
        };
        *slot = threshold;
        Ok(())
    }
}

/// The longest span without a successful attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Completion of the last success before it.
    pub from: Duration,
    /// Completion of the first success after it, or the end of the run.
    pub to: Duration,
    /// Whether a success came after it.
    pub recovered: bool,
}

impl Window {
    /// Its length.
    pub fn length(&self) -> Duration {
        self.to.saturating_sub(self.from)
    }
}

/// The longest gap between consecutive successful attempts of `kind` (or from
/// the last success to `end` when failures follow it).
pub fn longest_outage(attempts: &[Attempt], kind: AttemptKind, end: Duration) -> Option<Window> {
    let mut successes: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.kind == kind && a.outcome == Outcome::Ok)
        .map(|a| a.finished)
        .collect();
    successes.sort_unstable();
    let mut longest = successes
        .windows(2)
        .map(|pair| Window { from: pair[0], to: pair[1], recovered: true })
        .max_by_key(Window::length);
    let last = *successes.last()?;
    let failed_after =
        attempts.iter().any(|a| a.kind == kind && a.outcome != Outcome::Ok && a.started >= last);
    if failed_after {
        let tail = Window { from: last, to: end, recovered: false };
        if longest.is_none_or(|w| tail.length() > w.length()) {
            longest = Some(tail);
        }
    }
    longest
}

/// Every outage of `kind`: each gap between consecutive successes in which an
/// attempt failed, plus the tail from the last success to `end` when failures
/// follow it. Gaps between successes without a failure are pacing, not outages.
pub fn outages(attempts: &[Attempt], kind: AttemptKind, end: Duration) -> Vec<Window> {
    let mut successes: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.kind == kind && a.outcome == Outcome::Ok)
        .map(|a| a.finished)
        .collect();
    successes.sort_unstable();
    let failed_between = |from: Duration, to: Option<Duration>| {
        attempts.iter().any(|a| {
            a.kind == kind
                && a.outcome != Outcome::Ok
                && a.finished >= from
                && to.is_none_or(|to| a.finished <= to)
        })
    };
    let mut windows: Vec<Window> = successes
        .windows(2)
        .filter(|pair| failed_between(pair[0], Some(pair[1])))
        .map(|pair| Window { from: pair[0], to: pair[1], recovered: true })
        .collect();
    if let Some(&last) = successes.last()
        && attempts.iter().any(|a| a.kind == kind && a.outcome != Outcome::Ok && a.started >= last)
    {
        windows.push(Window { from: last, to: end, recovered: false });
    }
    windows
}

/// What the servers did during the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// The first primary seen.
    pub first_primary: Option<ServerSample>,
    /// The last primary seen.
    pub last_primary: Option<ServerSample>,
    /// Why the first primary's settings allow acknowledged commits to be lost.
    pub loss_allowed_because: Option<String>,
    /// Largest replay lag seen on any standby, in milliseconds.
    pub max_replay_lag_ms: Option<f64>,
    /// WAL the new primary never received: old primary's last position minus
    /// the new primary's last received position (a lower bound).
    pub wal_gap_bytes: Option<i64>,
}

impl Topology {
    /// Summarises the samples.
    pub fn from_samples(samples: &[ServerSample]) -> Self {
        let first = samples.iter().find(|s| s.is_primary()).cloned();
        let last = samples.iter().rev().find(|s| s.is_primary()).cloned();
        let loss_allowed_because = first.as_ref().and_then(durability_gap);
        let max_replay_lag_ms = samples
            .iter()
            .flat_map(|s| s.replicas.iter().filter_map(|r| r.replay_lag_ms))
            .fold(None, |max: Option<f64>, lag| Some(max.map_or(lag, |m| m.max(lag))));
        let wal_gap_bytes = match (&first, &last) {
            (Some(old), Some(new)) if old.server != new.server => {
                let old_end = samples
                    .iter()
                    .rev()
                    .find(|s| s.server == old.server && s.is_primary())
                    .and_then(|s| s.wal_lsn);
                let received = samples
                    .iter()
                    .rev()
                    .find(|s| s.server == new.server && s.in_recovery == Some(true))
                    .and_then(|s| s.wal_lsn);
                old_end.zip(received).map(|(a, b)| (a - b).max(0))
            }
            _ => None,
        };
        Self {
            first_primary: first,
            last_primary: last,
            loss_allowed_because,
            max_replay_lag_ms,
            wal_gap_bytes,
        }
    }

    /// Whether another server (or a new timeline) took over.
    pub fn failover_seen(&self) -> bool {
        match (&self.first_primary, &self.last_primary) {
            (Some(a), Some(b)) => {
                a.server != b.server
                    || b.timeline > a.timeline
                    || a.system_identifier != b.system_identifier
            }
            _ => false,
        }
    }

    /// `host:port (timeline N)` of a primary sample.
    fn describe(sample: &Option<ServerSample>) -> String {
        sample.as_ref().map_or_else(
            || "none seen".to_owned(),
            |s| {
                format!(
                    "{} (timeline {})",
                    s.server,
                    s.timeline.map_or("?".to_owned(), |t| t.to_string())
                )
            },
        )
    }
}

/// Why a primary's settings let an acknowledged commit be lost on failover.
fn durability_gap(primary: &ServerSample) -> Option<String> {
    let commit = primary.synchronous_commit.as_deref().unwrap_or("on");
    let names = primary.synchronous_standby_names.as_deref().unwrap_or("");
    if names.trim().is_empty() {
        return Some("asynchronous replication: synchronous_standby_names is empty".to_owned());
    }
    if matches!(commit, "off" | "local") {
        return Some(format!(
            "synchronous_commit = {commit} acknowledges before the standby has the WAL"
        ));
    }
    if !primary.replicas.iter().any(|r| matches!(r.sync_state.as_str(), "sync" | "quorum")) {
        return Some(format!(
            "no standby is in sync state (synchronous_standby_names = '{names}')"
        ));
    }
    None
}

/// Everything a run observed, ready to be judged.
#[derive(Debug, Clone)]
pub struct Observations {
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// Every server sample.
    pub samples: Vec<ServerSample>,
    /// The database's answer to the ledger.
    pub ledger: Result<LedgerCheck, String>,
    /// Length of the run.
    pub elapsed: Duration,
    /// Whether a failover was triggered on purpose (drill).
    pub failover_expected: bool,
    /// The drill's own window: first step started to last step ended.
    pub drill_window: Option<(Duration, Duration)>,
}

/// Judges a run: one check per criterion, measurements, and data.
pub fn judge(report: &mut Report, observations: &Observations, criteria: &Criteria) {
    let attempts = &observations.attempts;
    let topology = Topology::from_samples(&observations.samples);
    let writes = longest_outage(attempts, AttemptKind::Write, observations.elapsed);
    let reads = longest_outage(attempts, AttemptKind::Read, observations.elapsed);
    let failover = topology.failover_seen();

    match writes {
        Some(window) => {
            let mut check = criteria
                .downtime
                .check("failover-time", Quantity::seconds(window.length().as_secs_f64()));
            check = check.with_detail(format!(
                "writes unavailable from +{:.3} s to +{:.3} s{}",
                window.from.as_secs_f64(),
                window.to.as_secs_f64(),
                if window.recovered { "" } else { " (end of run: never recovered)" }
            ));
            report.push_check(check);
        }
        None => {
            report.push_check(Check::error(
                "failover-time",
                criteria.downtime.to_string(),
                "no write ever succeeded",
            ));
        }
    }
    let write_outages = outages(attempts, AttemptKind::Write, observations.elapsed);
    let total_write_downtime: Duration = write_outages.iter().map(Window::length).sum();
    if writes.is_some() {
        let check = criteria
            .total_downtime
            .check("total-downtime", Quantity::seconds(total_write_downtime.as_secs_f64()))
            .with_detail(format!(
                "{} write outage(s), longest {:.3} s",
                write_outages.len(),
                write_outages.iter().map(Window::length).max().unwrap_or_default().as_secs_f64()
            ));
        report.push_check(check);
    } else {
        report.push_check(Check::error(
            "total-downtime",
            criteria.total_downtime.to_string(),
            "no write ever succeeded",
        ));
    }
    let read_attempts = attempts.iter().filter(|a| a.kind == AttemptKind::Read).count();
    let read_check = match reads {
        Some(window) => criteria
            .read_downtime
            .check("read-availability", Quantity::seconds(window.length().as_secs_f64())),
        None if read_attempts > 0 => Check::fail(
            "read-availability",
            criteria.read_downtime.to_string(),
            format!("no read succeeded ({read_attempts} attempted)"),
        ),
        // No read was attempted (--readers 0): no evidence either way.
        None => Check::not_evaluated(
            "read-availability",
            criteria.read_downtime.to_string(),
            "no read was attempted: run with --readers 1 or more, or --skip-check read-availability",
        ),
    };
    report.push_check(read_check);

    let fault_start = observations.drill_window.map_or(Duration::ZERO, |(from, _)| from);
    report.push_check(lag_before_check(
        &observations.samples,
        fault_start,
        observations.drill_window.is_some(),
        criteria,
    ));
    let during: Vec<&Attempt> = attempts.iter().filter(|a| a.started >= fault_start).collect();
    let succeeded = during.iter().filter(|a| a.outcome == Outcome::Ok).count();
    report.push_check(if during.is_empty() {
        Check::not_evaluated(
            "query-success-rate",
            criteria.success_rate.to_string(),
            "no query was attempted after the fault started",
        )
    } else {
        criteria
            .success_rate
            .check("query-success-rate", Quantity::ratio(succeeded as f64 / during.len() as f64))
            .with_detail(format!("{succeeded} of {} queries succeeded", during.len()))
    });

    match &observations.ledger {
        Ok(check) => {
            let mut lost =
                criteria.lost.check("data-loss", Quantity::count(check.lost.len() as f64));
            if !check.lost.is_empty() {
                let mut detail = format!(
                    "lost acknowledged commits (incarnation, writer, seq): {}",
                    list(&check.lost)
                );
                if let Some(bytes) = topology.wal_gap_bytes {
                    detail.push_str(&format!(
                        "; the new primary never received at least {bytes} bytes of WAL"
                    ));
                }
                lost = lost.with_detail(detail);
            }
            report.push_check(lost);
            let mut duplicates = criteria
                .duplicates
                .check("duplicates", Quantity::count(check.duplicates.len() as f64));
            if !check.duplicates.is_empty() {
                let keys: Vec<WriteKey> = check.duplicates.iter().map(|(k, _)| *k).collect();
                duplicates =
                    duplicates.with_detail(format!("written more than once: {}", list(&keys)));
            }
            report.push_check(duplicates);
            for (name, value) in [
                ("rows_found", check.rows as f64),
                ("lost_commits", check.lost.len() as f64),
                ("indeterminate_committed", check.indeterminate_present as f64),
                ("indeterminate_not_committed", check.indeterminate_absent as f64),
            ] {
                report.push_measurement(Measurement::new(name, value, ""));
            }
            report.data.insert("lost".to_owned(), serde_json::json!(check.lost));
            report.data.insert("verified_on".to_owned(), serde_json::json!(check.server));
        }
        Err(e) => {
            report.push_check(Check::error("data-loss", criteria.lost.to_string(), e.clone()));
        }
    }

    let outage_seen =
        attempts.iter().any(|a| a.kind == AttemptKind::Write && a.outcome != Outcome::Ok);
    let recovery = match writes {
        Some(w) if !w.recovered => Check::fail(
            "pool-recovery",
            "the pool reconnects by itself (writes succeed again without restarting the probe)",
            format!("no write succeeded after +{:.3} s", w.from.as_secs_f64()),
        ),
        Some(w) if outage_seen => Check::pass(
            "pool-recovery",
            "the pool reconnects by itself (writes succeed again without restarting the probe)",
            format!("writes succeeded again at +{:.3} s", w.to.as_secs_f64()),
        ),
        _ => Check::skipped(
            "pool-recovery",
            "the pool reconnects by itself (writes succeed again without restarting the probe)",
            "no outage to recover from",
        ),
    };
    report.push_check(recovery);

    let visible = format!(
        "primary {} → {}",
        Topology::describe(&topology.first_primary),
        Topology::describe(&topology.last_primary)
    );
    let criterion = "the failover is visible: another primary or a new timeline";
    report.push_check(if failover {
        Check::pass("failover-visible", criterion, visible)
    } else if observations.failover_expected || outage_seen {
        Check::fail("failover-visible", criterion, visible)
    } else {
        Check::skipped("failover-visible", criterion, format!("no failover happened ({visible})"))
    });

    let criterion = "replication settings cannot lose acknowledged commits";
    report.push_check(match (&topology.loss_allowed_because, &topology.first_primary) {
        (_, None) => Check::error(
            "replication-durability",
            criterion,
            "no primary was reachable to read its settings",
        ),
        (None, Some(_)) => Check::pass("replication-durability", criterion, "synchronous"),
        (Some(reason), Some(_)) if criteria.accept_async => {
            Check::pass("replication-durability", criterion, "asynchronous (accepted)")
                .with_detail(reason.clone())
        }
        (Some(reason), Some(_)) => Check::fail("replication-durability", criterion, "asynchronous")
            .with_detail(format!(
                "{reason}; pass --accept-async if losing the last commits on failover is acceptable"
            )),
    });

    let (ok, failed, unknown) = count(attempts, AttemptKind::Write);
    let (reads_ok, reads_failed, _) = count(attempts, AttemptKind::Read);
    let seconds = observations.elapsed.as_secs_f64().max(0.001);
    let mut measurements = vec![
        ("writes_acknowledged", ok as f64, ""),
        ("writes_failed", failed as f64, ""),
        ("writes_indeterminate", unknown as f64, ""),
        ("write_rate", ok as f64 / seconds, "writes/s"),
        ("reads_ok", reads_ok as f64, ""),
        ("reads_failed", reads_failed as f64, ""),
        ("write_downtime", writes.map_or(f64::NAN, |w| w.length().as_secs_f64() * 1000.0), "ms"),
        ("read_downtime", reads.map_or(f64::NAN, |w| w.length().as_secs_f64() * 1000.0), "ms"),
        ("total_write_downtime", total_write_downtime.as_secs_f64() * 1000.0, "ms"),
        ("write_outages", write_outages.len() as f64, ""),
        ("run_length", seconds, "s"),
    ];
    if let Some(lag) = topology.max_replay_lag_ms {
        measurements.push(("max_replay_lag", lag, "ms"));
    }
    if let Some(gap) = topology.wal_gap_bytes {
        measurements.push(("wal_not_received", gap as f64, "bytes"));
    }
    if let Some((from, to)) = observations.drill_window {
        measurements.push(("drill_window", (to.saturating_sub(from)).as_secs_f64() * 1000.0, "ms"));
        if let Some(w) = writes {
            // Where the measured outage sits relative to the drill's own
            // timestamps. The end offset is negative when writes resumed before
            // the last step returned (`pg_ctl promote -w` polls).
            measurements.push((
                "outage_start_after_drill_start",
                (w.from.as_secs_f64() - from.as_secs_f64()) * 1000.0,
                "ms",
            ));
            measurements.push((
                "outage_end_after_drill_end",
                (w.to.as_secs_f64() - to.as_secs_f64()) * 1000.0,
                "ms",
            ));
        }
        report.data.insert(
            "drill_window_ms".to_owned(),
            serde_json::json!({ "from": from.as_millis() as u64, "to": to.as_millis() as u64 }),
        );
    }
    for (name, value, unit) in measurements {
        report.push_measurement(Measurement::new(name, value, unit));
    }
    report.data.insert(
        "primaries".to_owned(),
        serde_json::json!({ "before": topology.first_primary, "after": topology.last_primary }),
    );
    if let Some(window) = writes {
        report.data.insert(
            "write_outage_ms".to_owned(),
            serde_json::json!({ "from": window.from.as_millis() as u64, "to": window.to.as_millis() as u64, "recovered": window.recovered }),
        );
    }
}

/// The largest replay lag a primary reported for its standbys before
/// `fault_start` (every sample when `drilled` is false). A standby that is
/// caught up and idle has a NULL `replay_lag`; a zero byte gap counts as no lag.
fn lag_before_check(
    samples: &[ServerSample],
    fault_start: Duration,
    drilled: bool,
    criteria: &Criteria,
) -> Check {
    let before: Vec<&ServerSample> = samples
        .iter()
        .filter(|s| s.is_primary() && (!drilled || u128::from(s.at_ms) < fault_start.as_millis()))
        .collect();
    let replicas: Vec<_> = before.iter().flat_map(|s| s.replicas.iter()).collect();
    if replicas.is_empty() {
        let why = if before.is_empty() {
            "no primary was sampled before the fault"
        } else {
            return Check::skipped(
                "replication-lag-before",
                criteria.lag_before.to_string(),
                "the primary reported no standby in pg_stat_replication",
            );
        };
        return Check::not_evaluated(
            "replication-lag-before",
            criteria.lag_before.to_string(),
            why,
        );
    }
    let lags: Vec<f64> = replicas
        .iter()
        .filter_map(|r| r.replay_lag_ms.or((r.replay_gap_bytes == Some(0)).then_some(0.0)))
        .collect();
    match lags.into_iter().reduce(f64::max) {
        Some(lag) => criteria
            .lag_before
            .check("replication-lag-before", Quantity::millis(lag))
            .with_detail(format!("{} standby sample(s) before the fault", replicas.len())),
        None => Check::not_evaluated(
            "replication-lag-before",
            criteria.lag_before.to_string(),
            "pg_stat_replication gave no replay_lag before the fault",
        ),
    }
}

fn count(attempts: &[Attempt], kind: AttemptKind) -> (usize, usize, usize) {
    attempts.iter().filter(|a| a.kind == kind).fold((0, 0, 0), |(ok, failed, unknown), a| {
        match a.outcome {
            Outcome::Ok => (ok + 1, failed, unknown),
            Outcome::Failed => (ok, failed + 1, unknown),
            Outcome::Indeterminate => (ok, failed, unknown + 1),
        }
    })
}

/// The first 20 keys, and how many more.
fn list(keys: &[WriteKey]) -> String {
    let shown: Vec<String> =
        keys.iter().take(20).map(|(i, w, s)| format!("({i},{w},{s})")).collect();
    let more = keys.len().saturating_sub(20);
    if more > 0 { format!("{} and {more} more", shown.join(" ")) } else { shown.join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(kind: AttemptKind, finished_ms: u64, outcome: Outcome) -> Attempt {
        let at = Duration::from_millis(finished_ms);
        Attempt { kind, started: at, finished: at, outcome }
    }

    #[test]
    fn the_outage_spans_last_success_before_to_first_success_after() {
        let w = AttemptKind::Write;
        let attempts = [
            attempt(w, 100, Outcome::Ok),
            attempt(w, 110, Outcome::Ok),
            attempt(w, 300, Outcome::Failed),
            attempt(w, 900, Outcome::Indeterminate),
            attempt(w, 2_110, Outcome::Ok),
            attempt(w, 2_120, Outcome::Ok),
        ];
        let window = longest_outage(&attempts, w, Duration::from_secs(10)).unwrap();
        assert_eq!(
            (window.from, window.to, window.recovered),
            (Duration::from_millis(110), Duration::from_millis(2_110), true)
        );
    }

    #[test]
    fn an_outage_lasting_to_the_end_is_not_recovered() {
        let w = AttemptKind::Write;
        let attempts = [attempt(w, 100, Outcome::Ok), attempt(w, 150, Outcome::Failed)];
        let window = longest_outage(&attempts, w, Duration::from_secs(5)).unwrap();
        assert!(!window.recovered);
        assert_eq!(window.length(), Duration::from_millis(4_900));
    }

    fn judged(attempts: Vec<Attempt>, criteria: &Criteria) -> Report {
        let mut report = Report::new("pg-failover-probe", "test", "local");
        let observations = Observations {
            attempts,
            samples: Vec::new(),
            ledger: Err("not checked".to_owned()),
            elapsed: Duration::from_secs(10),
            failover_expected: true,
            drill_window: None,
        };
        judge(&mut report, &observations, criteria);
        report
    }

    fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
        report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}"))
    }

    #[test]
    fn total_downtime_sums_every_write_outage_and_is_judged() {
        let w = AttemptKind::Write;
        let r = AttemptKind::Read;
        // Two outages of 2 s and 1.5 s, separated by normal pacing gaps.
        let attempts = vec![
            attempt(w, 100, Outcome::Ok),
            attempt(w, 200, Outcome::Ok),
            attempt(w, 1_000, Outcome::Failed),
            attempt(w, 2_200, Outcome::Ok),
            attempt(w, 3_000, Outcome::Ok),
            attempt(w, 4_000, Outcome::Ok),
            attempt(w, 4_500, Outcome::Indeterminate),
            attempt(w, 5_500, Outcome::Ok),
            attempt(r, 100, Outcome::Ok),
            attempt(r, 5_500, Outcome::Ok),
        ];
        let windows = outages(&attempts, w, Duration::from_secs(10));
        let total: Duration = windows.iter().map(Window::length).sum();
        assert_eq!(windows.len(), 2);
        assert_eq!(total, Duration::from_millis(3_500));

        let mut criteria = Criteria::default();
        let report = judged(attempts.clone(), &criteria);
        let total_check = check(&report, "total-downtime");
        assert_eq!(total_check.verdict, shared_types::Verdict::Pass);
        let measured = report.measurements.iter().find(|m| m.name == "total_write_downtime");
        assert_eq!(measured.map(|m| m.value), Some(3_500.0));
        // The longest outage (2 s) meets 3 s; the total (3.5 s) does not.
        criteria.set("downtime < 3s".parse().unwrap()).unwrap();
        criteria.set("total_downtime < 3s".parse().unwrap()).unwrap();
        let report = judged(attempts, &criteria);
        assert_eq!(check(&report, "failover-time").verdict, shared_types::Verdict::Pass);
        assert_eq!(check(&report, "total-downtime").verdict, shared_types::Verdict::Fail);
    }

    #[test]
    fn reads_that_never_succeed_fail_read_availability() {
        let w = AttemptKind::Write;
        let r = AttemptKind::Read;
        let attempts = vec![
            attempt(w, 100, Outcome::Ok),
            attempt(w, 200, Outcome::Ok),
            attempt(r, 100, Outcome::Failed),
            attempt(r, 900, Outcome::Failed),
        ];
        let report = judged(attempts.clone(), &Criteria::default());
        let read = check(&report, "read-availability");
        assert_eq!(read.verdict, shared_types::Verdict::Fail);
        assert!(read.observed.as_deref().unwrap_or("").contains("no read succeeded"));
        // No read attempted at all: not evaluated, never left out.
        let report = judged(attempts[..2].to_vec(), &Criteria::default());
        assert_eq!(
            check(&report, "read-availability").verdict,
            shared_types::Verdict::NotEvaluated
        );
    }

    #[test]
    fn lag_before_the_fault_and_success_rate_during_it_are_judged_and_overridable() {
        use crate::observe::Replica;
        let w = AttemptKind::Write;
        let primary = |at_ms, lag| ServerSample {
            at_ms,
            server: "127.0.0.1:5432".to_owned(),
            reachable: true,
            in_recovery: Some(false),
            system_identifier: Some("1".to_owned()),
            timeline: Some(1),
            wal_lsn: Some(0),
            synchronous_commit: Some("on".to_owned()),
            synchronous_standby_names: Some("*".to_owned()),
            replicas: vec![Replica {
                name: "standby".to_owned(),
                state: "streaming".to_owned(),
                sync_state: "sync".to_owned(),
                replay_gap_bytes: Some(10),
                replay_lag_ms: Some(lag),
            }],
            error: None,
        };
        // 200 ms of lag before the fault at +1 s; 5 s of lag after it is not "before".
        let samples = vec![primary(500, 200.0), primary(2_000, 5_000.0)];
        // From the fault on: 3 of 4 queries succeed.
        let attempts = vec![
            attempt(w, 100, Outcome::Ok),
            attempt(w, 1_100, Outcome::Failed),
            attempt(w, 1_500, Outcome::Ok),
            attempt(w, 1_600, Outcome::Ok),
            attempt(w, 1_700, Outcome::Ok),
        ];
        let judge_with = |criteria: &Criteria| {
            let mut report = Report::new("pg-failover-probe", "test", "local");
            let observations = Observations {
                attempts: attempts.clone(),
                samples: samples.clone(),
                ledger: Err("not checked".to_owned()),
                elapsed: Duration::from_secs(3),
                failover_expected: true,
                drill_window: Some((Duration::from_secs(1), Duration::from_millis(1_200))),
            };
            judge(&mut report, &observations, criteria);
            report
        };
        let report = judge_with(&Criteria::default());
        assert_eq!(check(&report, "replication-lag-before").verdict, shared_types::Verdict::Pass);
        assert_eq!(check(&report, "query-success-rate").verdict, shared_types::Verdict::Pass);
        let mut strict = Criteria::default();
        strict.set("lag_before < 100ms".parse().unwrap()).unwrap();
        strict.set("success_rate >= 80%".parse().unwrap()).unwrap();
        let report = judge_with(&strict);
        assert_eq!(check(&report, "replication-lag-before").verdict, shared_types::Verdict::Fail);
        assert_eq!(check(&report, "query-success-rate").verdict, shared_types::Verdict::Fail);
    }

    #[test]
    fn thresholds_can_be_overridden_by_metric() {
        let mut criteria = Criteria::default();
        criteria.set("downtime < 5s".parse().unwrap()).unwrap();
        assert_eq!(criteria.downtime.to_string(), "downtime < 5s");
        assert!(criteria.set("p95 < 1s".parse().unwrap()).unwrap_err().contains("unknown metric"));
    }
}
