//! GFS retention over a simulated year of daily backups, and properties of
//! the planner for arbitrary backup sets.

#![allow(clippy::unwrap_used)]

use backup_agent::retention::{
    KeepReason, RetentionCandidate, RetentionPolicy, plan, wal_position,
};
use proptest::prelude::*;

const DAY: i64 = 86_400_000;
/// 2026-01-01T02:00:00Z
const START: i64 = 1_767_232_800_000;

fn wal_name(segment: u32) -> String {
    format!("00000001{:08X}{:08X}", segment / 256, segment % 256)
}

/// One base backup a day at 02:00 for a year; backup `i` starts at WAL segment 10*i.
fn year_of_daily_backups() -> (Vec<RetentionCandidate>, Vec<String>) {
    let backups = (0..365)
        .map(|i| RetentionCandidate {
            id: format!("day-{i:03}"),
            series: "pg-base:db".into(),
            time_ms: START + i * DAY,
            complete: true,
            verified: false,
            start_wal: Some(wal_name(u32::try_from(10 * i).unwrap())),
        })
        .collect();
    let wal = (0..3650 + 5).map(wal_name).chain(["00000002.history".to_owned()]).collect();
    (backups, wal)
}

#[test]
fn a_year_of_daily_backups_keeps_exactly_7_daily_4_weekly_12_monthly_and_the_wal_they_need() {
    let (backups, wal) = year_of_daily_backups();
    let now = START + 364 * DAY + 3_600_000;
    let p = plan(&backups, &wal, &RetentionPolicy::default(), now);
    assert_eq!(p.count(KeepReason::Daily), 7);
    assert_eq!(p.count(KeepReason::Weekly), 4);
    assert_eq!(p.count(KeepReason::Monthly), 12);
    // Dailies are the last 7 days; monthlies the newest backup of each month
    // (the oldest one is January's last day, backup 30).
    let kept: Vec<&str> = p.kept().collect();
    for i in 358..365 {
        assert!(kept.contains(&format!("day-{i:03}").as_str()), "day {i}");
    }
    assert!(kept.contains(&"day-030"));
    assert!(!kept.contains(&"day-029"));
    // Distinct backups: 7 dailies + 3 older weekly Sundays + 11 older month-ends (union).
    let distinct = kept.len();
    assert!((12..=23).contains(&distinct), "{distinct}");
    // WAL chain intact: nothing at or after the oldest kept backup's start
    // segment is deleted, everything before it is; history files stay.
    assert_eq!(p.wal_keep_from.as_deref(), Some(wal_name(300).as_str()));
    assert!(p.wal_delete.iter().all(|w| wal_position(w) < wal_position(&wal_name(300))));
    assert_eq!(p.wal_delete.len(), 300);
    assert!(!p.wal_delete.iter().any(|w| w.ends_with(".history")));
    // Pruning again after applying the plan deletes nothing more.
    let remaining: Vec<RetentionCandidate> =
        backups.into_iter().filter(|b| kept.contains(&b.id.as_str())).collect();
    let remaining_wal: Vec<String> =
        wal.into_iter().filter(|w| !p.wal_delete.contains(w)).collect();
    let again = plan(&remaining, &remaining_wal, &RetentionPolicy::default(), now);
    assert_eq!(again.deleted().count(), 0);
    assert!(again.wal_delete.is_empty());
}

#[test]
fn the_newest_verified_and_in_progress_backups_are_never_pruned() {
    let (mut backups, wal) = year_of_daily_backups();
    backups[100].verified = true; // an old verified backup, newer ones unverified
    backups.push(RetentionCandidate {
        id: "running".into(),
        series: String::new(),
        time_ms: i64::MAX,
        complete: false,
        verified: false,
        start_wal: Some(String::new()),
    });
    let p = plan(&backups, &wal, &RetentionPolicy::default(), START + 365 * DAY);
    let kept: Vec<&str> = p.kept().collect();
    assert!(kept.contains(&"day-100"));
    assert!(kept.contains(&"running"));
    // An incomplete base backup may need any WAL: none is deleted.
    assert!(p.wal_delete.is_empty());
}

#[test]
fn the_pitr_window_keeps_its_base_backup() {
    let (backups, wal) = year_of_daily_backups();
    let policy = RetentionPolicy { daily: 1, weekly: 0, monthly: 0, pitr_window_ms: 10 * DAY };
    let now = START + 364 * DAY + 3_600_000;
    let p = plan(&backups, &wal, &policy, now);
    let kept: Vec<&str> = p.kept().collect();
    // now - 10d falls on day 354 at 03:00: day 354 is the window's base.
    assert!(kept.contains(&"day-354"), "{kept:?}");
    assert!(!kept.contains(&"day-353"));
    assert_eq!(p.wal_keep_from.as_deref(), Some(wal_name(3540).as_str()));
}

fn arb_backups() -> impl Strategy<Value = Vec<RetentionCandidate>> {
    prop::collection::vec(
        (0i64..800, 0u8..24, any::<bool>(), prop::bool::weighted(0.1), 0u8..2),
        0..120,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (day, hour, verified, incomplete, series))| RetentionCandidate {
                id: format!("b{i:03}"),
                series: format!("s{series}"),
                time_ms: START + day * DAY + i64::from(hour) * 3_600_000,
                complete: !incomplete,
                verified,
                start_wal: Some(wal_name(u32::try_from(day).unwrap() * 4 + u32::from(hour) / 8)),
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn retention_invariants_hold(
        backups in arb_backups(),
        daily in 0usize..10, weekly in 0usize..6, monthly in 0usize..14,
    ) {
        let wal: Vec<String> = (0..3300).step_by(7).map(wal_name).collect();
        let policy = RetentionPolicy { daily, weekly, monthly, pitr_window_ms: 0 };
        let now = START + 900 * DAY;
        let p = plan(&backups, &wal, &policy, now);
        let kept: std::collections::BTreeSet<&str> = p.kept().collect();
        // Every backup gets exactly one decision.
        prop_assert_eq!(p.decisions.len(), backups.len());
        // Tier counts never exceed the policy.
        prop_assert!(p.count(KeepReason::Daily) <= daily * 2);
        for c in &backups {
            // In-progress backups are never deleted.
            if !c.complete { prop_assert!(kept.contains(c.id.as_str())); }
        }
        for series in ["s0", "s1"] {
            let members: Vec<&RetentionCandidate> = backups.iter().filter(|c| c.complete && c.series == series).collect();
            // Per series: each tier keeps min(limit, distinct periods).
            let days: std::collections::BTreeSet<i64> = members.iter().map(|c| c.time_ms.div_euclid(DAY)).collect();
            let daily_kept = p.decisions.iter().filter(|d| d.reasons.contains(&KeepReason::Daily)
                && members.iter().any(|m| m.id == d.id)).count();
            prop_assert_eq!(daily_kept, days.len().min(daily));
            // The newest verified backup of the series stays.
            if let Some(v) = members.iter().filter(|c| c.verified).max_by(|a, b| a.time_ms.cmp(&b.time_ms).then(a.id.cmp(&b.id))) {
                prop_assert!(kept.contains(v.id.as_str()));
            }
        }
        // WAL: nothing a kept complete base backup needs is deleted.
        let bound = backups.iter().filter(|c| c.complete && kept.contains(c.id.as_str()))
            .filter_map(|c| wal_position(c.start_wal.as_deref()?)).min();
        for w in &p.wal_delete {
            prop_assert!(bound.is_some_and(|b| wal_position(w).is_some_and(|p| p < b)));
        }
        // Applying the plan and planning again deletes nothing more.
        let remaining: Vec<RetentionCandidate> = backups.iter().filter(|b| kept.contains(b.id.as_str())).cloned().collect();
        let remaining_wal: Vec<String> = wal.iter().filter(|w| !p.wal_delete.contains(w)).cloned().collect();
        let again = plan(&remaining, &remaining_wal, &policy, now);
        prop_assert_eq!(again.deleted().count(), 0);
        prop_assert!(again.wal_delete.is_empty());
    }
}
