//! Load models: closed (a fixed population of users with think time, like
//! Locust and k6's VUs) and open (requests arrive at a rate whatever the
//! answers do, like wrk2 and k6's arrival-rate executors), and sharding.
//!
//! In the open model each request has an intended start on the arrival
//! schedule. When the target stalls, requests queue behind it; their latency
//! is measured from the intended start, not from when a free user finally
//! sent them. That is the coordinated-omission correction wrk2 makes: a
//! stall of 500 ms shows as the hundreds of slow requests real clients would
//! have seen, not as the one request the load generator happened to have in
//! flight.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How load is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum LoadModel {
    /// A fixed population of users, each looping over its scenario with think time.
    Closed {
        /// Users at full load.
        users: usize,
        /// Users started per second.
        hatch_rate: f64,
        /// How long full load is held (after the ramp-up).
        duration_secs: u64,
        /// Seconds to stop the users gradually at the end (0: all at once).
        #[serde(default)]
        ramp_down_secs: u64,
    },
    /// A population of users that changes in stages, like k6's `stages`:
    /// each stage moves linearly from the previous stage's users (0 at the
    /// start) to its own over its duration.
    Staged {
        /// The stages, in order.
        stages: UserStages,
    },
    /// Requests arrive on a schedule; `max_users` bounds requests in flight.
    Open {
        /// Arrivals per second, as stages of (target rate, seconds to reach it).
        rate: ArrivalRate,
        /// Users available to send arrivals (requests in flight at most).
        max_users: usize,
        /// How long arrivals are scheduled.
        duration_secs: u64,
    },
}

impl LoadModel {
    /// A line for reports: which model and which latency correction.
    pub fn describe(&self) -> String {
        match self {
            LoadModel::Closed { users, hatch_rate, duration_secs, ramp_down_secs } => {
                let down = if *ramp_down_secs > 0 {
                    format!(", ramped down over {ramp_down_secs} s")
                } else {
                    String::new()
                };
                format!(
                    "closed model: {users} users started at {hatch_rate}/s, held {duration_secs} s{down}; latency from send to last byte (no coordinated-omission correction: users wait for answers, as real ones do)"
                )
            }
            LoadModel::Staged { stages } => format!(
                "closed model in stages: {stages}; latency from send to last byte (no coordinated-omission correction: users wait for answers, as real ones do)"
            ),
            LoadModel::Open { rate, max_users, duration_secs } => format!(
                "open model: {rate} for {duration_secs} s with at most {max_users} requests in flight; latency corrected for coordinated omission (measured from each request's intended start, as wrk2 does)"
            ),
        }
    }

    /// Whether latencies are corrected from intended start times.
    pub fn corrected(&self) -> bool {
        matches!(self, LoadModel::Open { .. })
    }

    /// Seconds the run lasts, ramps included.
    pub fn total_secs(&self) -> u64 {
        match self {
            LoadModel::Closed { users, hatch_rate, duration_secs, ramp_down_secs } => {
                let ramp =
                    if *hatch_rate > 0.0 { (*users as f64 / hatch_rate).ceil() as u64 } else { 0 };
                ramp + duration_secs + ramp_down_secs
            }
            LoadModel::Staged { stages } => stages.stages.iter().map(|s| s.secs).sum(),
            LoadModel::Open { duration_secs, .. } => *duration_secs,
        }
    }

    /// The most users (closed models) or requests in flight (open) at once.
    pub fn peak_users(&self) -> usize {
        match self {
            LoadModel::Closed { users, .. } => *users,
            LoadModel::Staged { stages } => stages.peak(),
            LoadModel::Open { max_users, .. } => *max_users,
        }
    }

    /// This shard's part of the load: users, hatch rate and arrival rate are
    /// divided by the shard count (the first shards take the remainder of users).
    pub fn for_shard(&self, shard: Shard) -> LoadModel {
        let share = |n: usize| n / shard.count + usize::from(shard.index - 1 < n % shard.count);
        let n = shard.count as f64;
        match self.clone() {
            LoadModel::Closed { users, hatch_rate, duration_secs, ramp_down_secs } => {
                LoadModel::Closed {
                    users: share(users),
                    hatch_rate: hatch_rate / n,
                    duration_secs,
                    ramp_down_secs,
                }
            }
            LoadModel::Staged { stages } => LoadModel::Staged {
                stages: UserStages {
                    stages: stages
                        .stages
                        .iter()
                        .map(|s| UserStage { users: share(s.users), secs: s.secs })
                        .collect(),
                },
            },
            LoadModel::Open { rate, max_users, duration_secs } => LoadModel::Open {
                rate: ArrivalRate {
                    stages: rate.stages.iter().map(|(r, s)| (r / n, *s)).collect(),
                },
                max_users: share(max_users).max(1),
                duration_secs,
            },
        }
    }
}

/// Part K of N of a distributed run (`--shard 2/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("invalid --shard {s:?}: expected K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) =
            (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Arrivals per second over time: stages of (rate to reach, seconds to get
/// there), linear in between; one stage of 0 s is a constant rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrivalRate {
    /// (arrivals per second, seconds to ramp to it).
    pub stages: Vec<(f64, u64)>,
}

impl ArrivalRate {
    /// A constant rate.
    pub fn constant(per_second: f64) -> ArrivalRate {
        ArrivalRate { stages: vec![(per_second, 0)] }
    }

    /// The rate `t` seconds in.
    pub fn at(&self, t: f64) -> f64 {
        let mut from = self.stages.first().map_or(0.0, |s| if s.1 == 0 { s.0 } else { 0.0 });
        let mut start = 0.0;
        for &(to, secs) in &self.stages {
            let end = start + secs as f64;
            if t < end {
                return from + (to - from) * (t - start) / secs as f64;
            }
            from = to;
            start = end;
        }
        from
    }
}

impl FromStr for ArrivalRate {
    type Err = String;

    /// `500/s` (constant), or ramping stages `100/s:10s,500/s:30s`.
    fn from_str(s: &str) -> Result<ArrivalRate, String> {
        let rate = |r: &str| -> Result<f64, String> {
            let r = r.trim();
            let (n, unit) = r.split_once('/').unwrap_or((r, "s"));
            let n: f64 =
                n.trim().parse().map_err(|_| format!("invalid rate {r:?}: expected e.g. 500/s"))?;
            let per = match unit.trim() {
                "s" => 1.0,
                "m" | "min" => 60.0,
                other => return Err(format!("invalid rate unit {other:?} in {r:?}: use /s or /m")),
            };
            if !(n.is_finite() && n >= 0.0) {
                return Err(format!("invalid rate {r:?}: must be a positive number"));
            }
            Ok(n / per)
        };
        let mut stages = Vec::new();
        for part in s.split(',') {
            match part.split_once(':') {
                Some((r, d)) => {
                    let d = shared_types::parse_duration(d.trim())?;
                    stages.push((rate(r)?, d.as_secs()));
                }
                None => stages.push((rate(part)?, 0)),
            }
        }
        if stages.iter().all(|(r, _)| *r == 0.0) {
            return Err(format!("--rate {s:?} never sends anything: give a rate above 0"));
        }
        Ok(ArrivalRate { stages })
    }
}

impl fmt::Display for ArrivalRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stages.as_slice() {
            [(r, 0)] => write!(f, "{r} requests/s"),
            stages => {
                let parts: Vec<String> =
                    stages.iter().map(|(r, s)| format!("{r}/s over {s} s")).collect();
                write!(f, "arrival rate ramping {}", parts.join(" then "))
            }
        }
    }
}

/// One stage of [`LoadModel::Staged`]: reach `users` over `secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStage {
    /// Users at the end of the stage.
    pub users: usize,
    /// Seconds the stage lasts.
    pub secs: u64,
}

/// k6-style stages of users: `--stages 100:30s,100:5m,0:30s` ramps to 100
/// users over 30 s, holds them 5 minutes and stops them over 30 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStages {
    /// The stages, in order.
    pub stages: Vec<UserStage>,
}

impl UserStages {
    /// The most users of any stage.
    pub fn peak(&self) -> usize {
        self.stages.iter().map(|s| s.users).max().unwrap_or(0)
    }

    /// goose's `--test-plan` form of the same stages: `100,30;100,300;0,30`.
    pub fn goose_test_plan(&self) -> String {
        let steps: Vec<String> =
            self.stages.iter().map(|s| format!("{},{}", s.users, s.secs)).collect();
        steps.join(";")
    }

    /// Users `t` seconds in (linear within a stage, as goose and k6 ramp).
    pub fn users_at(&self, t: f64) -> f64 {
        let (mut from, mut start) = (0.0, 0.0);
        for s in &self.stages {
            let end = start + s.secs as f64;
            if t < end {
                return from + (s.users as f64 - from) * (t - start) / s.secs as f64;
            }
            from = s.users as f64;
            start = end;
        }
        from
    }
}

impl FromStr for UserStages {
    type Err = String;

    /// `USERS:DURATION[,USERS:DURATION...]`, e.g. `100:30s,100:5m,0:30s`.
    fn from_str(s: &str) -> Result<UserStages, String> {
        let mut stages = Vec::new();
        for part in s.split(',').map(str::trim) {
            let bad = |why: &str| {
                format!(
                    "invalid stage {part:?} in --stages {s:?}: {why}; expected USERS:DURATION, e.g. 100:30s,100:5m,0:30s"
                )
            };
            let (users, secs) = part.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let users: usize =
                users.trim().parse().map_err(|_| bad("users must be a whole number"))?;
            let secs = shared_types::parse_duration(secs.trim()).map_err(|e| bad(&e))?.as_secs();
            if secs == 0 {
                return Err(bad("a stage lasts at least 1s"));
            }
            stages.push(UserStage { users, secs });
        }
        let stages = UserStages { stages };
        if stages.peak() == 0 {
            return Err(format!("--stages {s:?} never starts a user: give a stage above 0 users"));
        }
        Ok(stages)
    }
}

impl fmt::Display for UserStages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut from = 0;
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(|s| {
                let part = if s.users == from {
                    format!("{} users held {} s", s.users, s.secs)
                } else {
                    format!("{from}→{} users over {} s", s.users, s.secs)
                };
                from = s.users;
                part
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// The arrival schedule of the open model, shared by every user: each
/// [`next`](Self::next) hands out the intended start of the next request.
#[derive(Debug)]
pub struct ArrivalSchedule {
    rate: ArrivalRate,
    duration: Duration,
    state: Mutex<Option<(Instant, f64)>>,
}

impl ArrivalSchedule {
    /// A schedule of `rate` for `duration`; it starts with the first call to `next`.
    pub fn new(rate: ArrivalRate, duration: Duration) -> ArrivalSchedule {
        ArrivalSchedule { rate, duration, state: Mutex::new(None) }
    }

    /// The intended start of the next arrival, or `None` once the schedule is over.
    pub fn next(&self) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, offset) = state.get_or_insert_with(|| (Instant::now(), 0.0));
        let mut t = *offset;
        loop {
            if t >= self.duration.as_secs_f64() - 1e-9 {
                *offset = t;
                return None;
            }
            let rate = self.rate.at(t);
            if rate > 0.0 {
                *offset = t + 1.0 / rate;
                return Some(*start + Duration::from_secs_f64(t));
            }
            // A ramp from 0: no arrivals until the rate rises.
            t += 0.01;
        }
    }

    /// How long arrivals are scheduled.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When arrivals began, once they have.
    pub fn started(&self) -> Option<Instant> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_users_and_rates() {
        let closed =
            LoadModel::Closed { users: 10, hatch_rate: 4.0, duration_secs: 5, ramp_down_secs: 0 };
        let parts: Vec<usize> =
            (1..=3).map(|k| closed.for_shard(Shard { index: k, count: 3 }).peak_users()).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        let staged =
            LoadModel::Staged { stages: "10:2s,3:1s".parse().unwrap_or_else(|e| panic!("{e}")) };
        match staged.for_shard(Shard { index: 2, count: 2 }) {
            LoadModel::Staged { stages } => assert_eq!(stages.goose_test_plan(), "5,2;1,1"),
            other => panic!("{other:?}"),
        }
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!("0/4".parse::<Shard>().is_err() && "5/4".parse::<Shard>().is_err());
    }

    #[test]
    fn rates_parse_and_ramp() {
        let r: ArrivalRate = "500/s".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.at(3.0), 500.0);
        let r: ArrivalRate = "0/s,100/s:10s".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!((r.at(5.0) - 50.0).abs() < 1e-9 && r.at(20.0) == 100.0);
        assert!("fast".parse::<ArrivalRate>().is_err());
        assert!("0/s".parse::<ArrivalRate>().is_err());
    }

    #[test]
    fn stages_parse_ramp_and_read_back() {
        let s: UserStages = "100:30s,100:5m,0:30s".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.goose_test_plan(), "100,30;100,300;0,30");
        assert_eq!(
            s.to_string(),
            "0→100 users over 30 s, 100 users held 300 s, 100→0 users over 30 s"
        );
        assert_eq!(s.users_at(15.0), 50.0);
        assert_eq!(s.users_at(100.0), 100.0);
        assert_eq!(s.users_at(345.0), 50.0);
        assert_eq!(LoadModel::Staged { stages: s }.total_secs(), 360);
        for bad in ["100", "x:30s", "10:0s", "0:10s", "10:ten"] {
            let err = bad.parse::<UserStages>().unwrap_err();
            assert!(err.contains("--stages"), "{err}");
        }
    }

    #[test]
    fn the_schedule_spaces_arrivals_by_the_rate_and_ends() {
        let s = ArrivalSchedule::new(ArrivalRate::constant(10.0), Duration::from_secs(1));
        let times: Vec<Instant> = std::iter::from_fn(|| s.next()).collect();
        assert_eq!(times.len(), 10);
        let gap = times[1] - times[0];
        assert!((gap.as_secs_f64() - 0.1).abs() < 1e-6);
    }
}
