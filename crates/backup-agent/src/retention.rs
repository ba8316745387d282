//! GFS retention computed as a [`RetentionPlan`] before anything is deleted.
//!
//! Tiers count independently, as in restic's `--keep-daily/weekly/monthly`:
//! the newest backup of each of the `daily` most recent days that have a
//! backup is kept, likewise for ISO weeks (Monday to Sunday, UTC) and calendar
//! months; one backup can satisfy several tiers. Tiers apply per series (kind
//! and source). On top of the tiers, a backup is always kept when it is:
//! the newest *verified* backup of its series, still being written
//! (incomplete), or needed for the point-in-time window (the newest base
//! backup taken at or before `now - pitr_window`, and all later ones).
//!
//! WAL is deleted only below the start segment of the oldest base backup that
//! stays; with no base backup staying, no WAL is deleted. History files are
//! never deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

const DAY_MS: i64 = 86_400_000;

/// A tier: its reason, how many periods it keeps, and the period of a time.
type Tier = (KeepReason, usize, fn(i64) -> i64);

/// How many backups of each tier to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    /// Daily backups kept (default 7).
    pub daily: usize,
    /// Weekly backups kept (default 4).
    pub weekly: usize,
    /// Monthly backups kept (default 12).
    pub monthly: usize,
    /// Every point of the last `pitr_window_ms` must stay restorable (0 = none).
    pub pitr_window_ms: i64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy { daily: 7, weekly: 4, monthly: 12, pitr_window_ms: 0 }
    }
}

/// What the planner needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionCandidate {
    /// Backup id.
    pub id: String,
    /// Series: backups of one kind from one source are retained together.
    pub series: String,
    /// Start time, ms since the epoch.
    pub time_ms: i64,
    /// The manifest exists.
    pub complete: bool,
    /// The latest verification passed.
    pub verified: bool,
    /// First WAL segment a restore of this base backup needs (base backups only).
    pub start_wal: Option<String>,
}

/// Why a backup stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepReason {
    /// Newest of one of the last N days.
    Daily,
    /// Newest of one of the last N ISO weeks.
    Weekly,
    /// Newest of one of the last N months.
    Monthly,
    /// The newest verified backup of its series.
    NewestVerified,
    /// No manifest yet: being written (or killed; `recover` handles that).
    InProgress,
    /// Base of the point-in-time window.
    PitrWindow,
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Backup id.
    pub id: String,
    /// Empty: delete it.
    pub reasons: Vec<KeepReason>,
}

/// What a prune would keep and delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RetentionPlan {
    /// Every backup, oldest first, with why it stays.
    pub decisions: Vec<Decision>,
    /// WAL segments (file names) that are kept only from this one on.
    pub wal_keep_from: Option<String>,
    /// WAL files to delete.
    pub wal_delete: Vec<String>,
    /// WAL files kept.
    pub wal_kept: usize,
}

impl RetentionPlan {
    /// Ids of the backups that stay.
    pub fn kept(&self) -> impl Iterator<Item = &str> {
        self.decisions.iter().filter(|d| !d.reasons.is_empty()).map(|d| d.id.as_str())
    }

    /// Ids of the backups to delete.
    pub fn deleted(&self) -> impl Iterator<Item = &str> {
        self.decisions.iter().filter(|d| d.reasons.is_empty()).map(|d| d.id.as_str())
    }

    /// How many backups a tier keeps.
    pub fn count(&self, reason: KeepReason) -> usize {
        self.decisions.iter().filter(|d| d.reasons.contains(&reason)).count()
    }
}

/// Days since 1970-01-01 (UTC) of `ms`.
fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// ISO week number since the epoch: weeks start on Monday (1970-01-01 was a Thursday).
fn week_of(ms: i64) -> i64 {
    (day_of(ms) + 3).div_euclid(7)
}

/// Months since year 0 of `ms` (UTC).
fn month_of(ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(day_of(ms));
    year * 12 + month - 1
}

/// Howard Hinnant's `civil_from_days`: (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The (timeline-independent) position of a WAL file name: log and segment
/// of its first 24 hex digits; `None` for history files and other names.
pub fn wal_position(name: &str) -> Option<(u32, u32)> {
    let head = name.get(..24)?;
    if !head.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let log = u32::from_str_radix(&head[8..16], 16).ok()?;
    let seg = u32::from_str_radix(&head[16..24], 16).ok()?;
    Some((log, seg))
}

/// The archived WAL of one timeline from a base backup's start segment on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalChain {
    /// Timeline (the first 8 hex digits of the start segment).
    pub timeline: String,
    /// The segment the chain starts at.
    pub start: String,
    /// Distinct segments archived at or after `start` on the timeline.
    pub segments: usize,
    /// The newest archived segment of the timeline, if any.
    pub newest: Option<String>,
    /// Segments between `start` and `newest` that are not archived (the first 5).
    pub missing: Vec<String>,
    /// How many are missing in all.
    pub missing_count: usize,
}

impl WalChain {
    /// Whether every segment from `start` to `newest` is archived.
    pub fn complete(&self) -> bool {
        self.missing_count == 0
    }
}

/// The segment after `(log, seg)` (16 MiB segments: 256 per log file).
fn next_segment((log, seg): (u32, u32)) -> (u32, u32) {
    if seg >= 0xFF { (log.saturating_add(1), 0) } else { (log, seg + 1) }
}

/// Which segments from `start_wal` to the newest archived one of its timeline
/// are archived and which are missing; `None` if `start_wal` is not a segment name.
pub fn wal_chain(start_wal: &str, wal: &[String]) -> Option<WalChain> {
    let start = wal_position(start_wal)?;
    let timeline = start_wal[..8].to_owned();
    let mut positions: Vec<(u32, u32)> = wal
        .iter()
        .filter(|f| f.len() == 24 && f.starts_with(&timeline))
        .filter_map(|f| wal_position(f))
        .filter(|p| *p >= start)
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let name = |(log, seg): (u32, u32)| format!("{timeline}{log:08X}{seg:08X}");
    let mut chain = WalChain {
        timeline: timeline.clone(),
        start: start_wal[..24].to_owned(),
        segments: positions.len(),
        newest: positions.last().map(|p| name(*p)),
        missing: Vec::new(),
        missing_count: 0,
    };
    let mut expected = start;
    for p in &positions {
        while expected < *p {
            if chain.missing.len() < 5 {
                chain.missing.push(name(expected));
            }
            chain.missing_count += 1;
            expected = next_segment(expected);
        }
        expected = next_segment(*p);
    }
    Some(chain)
}

/// Computes the plan. `wal` holds WAL file names (without `.zst`).
pub fn plan(
    candidates: &[RetentionCandidate],
    wal: &[String],
    policy: &RetentionPolicy,
    now_ms: i64,
) -> RetentionPlan {
    let mut reasons: BTreeMap<&str, BTreeSet<KeepReason>> =
        candidates.iter().map(|c| (c.id.as_str(), BTreeSet::new())).collect();
    let mut series: BTreeMap<&str, Vec<&RetentionCandidate>> = BTreeMap::new();
    for c in candidates {
        if c.complete {
            series.entry(c.series.as_str()).or_default().push(c);
        } else if let Some(r) = reasons.get_mut(c.id.as_str()) {
            r.insert(KeepReason::InProgress);
        }
    }
    for members in series.values_mut() {
        // Newest first; ties broken by id so the plan is deterministic.
        members.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then(b.id.cmp(&a.id)));
        let tiers: [Tier; 3] = [
            (KeepReason::Daily, policy.daily, day_of),
            (KeepReason::Weekly, policy.weekly, week_of),
            (KeepReason::Monthly, policy.monthly, month_of),
        ];
        for (reason, limit, period_of) in tiers {
            let mut seen = BTreeSet::new();
            for c in members.iter() {
                if seen.len() >= limit {
                    break;
                }
                if seen.insert(period_of(c.time_ms)) {
                    reasons.entry(c.id.as_str()).or_default().insert(reason);
                }
            }
        }
        if let Some(newest_verified) = members.iter().find(|c| c.verified) {
            reasons
                .entry(newest_verified.id.as_str())
                .or_default()
                .insert(KeepReason::NewestVerified);
        }
        if policy.pitr_window_ms > 0 {
            let window_start = now_ms.saturating_sub(policy.pitr_window_ms);
            // The newest backup at or before the window start, and every later one.
            let base = members.iter().find(|c| c.time_ms <= window_start);
            for c in members.iter() {
                if c.time_ms > window_start || base.is_some_and(|b| b.id == c.id) {
                    reasons.entry(c.id.as_str()).or_default().insert(KeepReason::PitrWindow);
                }
            }
        }
    }
    let decisions: Vec<Decision> = {
        let mut sorted: Vec<&RetentionCandidate> = candidates.iter().collect();
        sorted.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then(a.id.cmp(&b.id)));
        sorted
            .into_iter()
            .map(|c| Decision {
                id: c.id.clone(),
                reasons: reasons
                    .get(c.id.as_str())
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect()
    };
    // WAL below the oldest kept base backup's start segment goes; incomplete
    // base backups may need WAL from any point, so they hold it all back.
    let kept: BTreeSet<&str> =
        decisions.iter().filter(|d| !d.reasons.is_empty()).map(|d| d.id.as_str()).collect();
    let holds_all = candidates.iter().any(|c| !c.complete && c.start_wal.is_some());
    let keep_from = candidates
        .iter()
        .filter(|c| c.complete && kept.contains(c.id.as_str()))
        .filter_map(|c| c.start_wal.as_deref().and_then(|w| wal_position(w).map(|p| (p, w))))
        .min();
    let mut plan = RetentionPlan { decisions, ..RetentionPlan::default() };
    if let (Some((bound, name)), false) = (keep_from, holds_all) {
        plan.wal_keep_from = Some(name.to_owned());
        for file in wal {
            match wal_position(file) {
                Some(pos) if pos < bound && !file.ends_with(".history") => {
                    plan.wal_delete.push(file.clone())
                }
                _ => plan.wal_kept += 1,
            }
        }
    } else {
        plan.wal_kept = wal.len();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_periods() {
        // 2024-01-01 was a Monday; 2023-12-31 a Sunday.
        let monday = 19_723 * DAY_MS;
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(week_of(monday), week_of(monday + 6 * DAY_MS));
        assert_ne!(week_of(monday), week_of(monday - 1));
        assert_eq!(month_of(monday) - month_of(monday - 1), 1);
    }

    #[test]
    fn a_wal_chain_names_its_gaps() {
        let wal: Vec<String> = [
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000007",
            "000000020000000000000005",
            "00000002.history",
        ]
        .map(str::to_owned)
        .into();
        let chain = wal_chain("000000010000000000000003", &wal).unwrap();
        assert_eq!(chain.segments, 3);
        assert_eq!(chain.newest.as_deref(), Some("000000010000000000000007"));
        assert_eq!(chain.missing, ["000000010000000000000005", "000000010000000000000006"]);
        assert!(!chain.complete());
        let chain = wal_chain("000000010000000000000007", &wal).unwrap();
        assert!(chain.complete() && chain.segments == 1);
        assert!(wal_chain("00000002.history", &wal).is_none());
    }

    #[test]
    fn wal_positions_ignore_timeline() {
        assert_eq!(wal_position("000000010000000A000000FF"), Some((10, 255)));
        assert_eq!(wal_position("000000020000000A000000FF.partial"), Some((10, 255)));
        assert_eq!(wal_position("00000002.history"), None);
    }
}
