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
            LoadModel::Open { duration_secs, .. } => *duration_secs,
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
        let parts: Vec<usize> = (1..=3)
            .map(|k| match closed.for_shard(Shard { index: k, count: 3 }) {
                LoadModel::Closed { users, .. } => users,
                LoadModel::Open { .. } => 0,
            })
            .collect();
        assert_eq!(parts, vec![4, 3, 3]);
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
    fn the_schedule_spaces_arrivals_by_the_rate_and_ends() {
        let s = ArrivalSchedule::new(ArrivalRate::constant(10.0), Duration::from_secs(1));
        let times: Vec<Instant> = std::iter::from_fn(|| s.next()).collect();
        assert_eq!(times.len(), 10);
        let gap = times[1] - times[0];
        assert!((gap.as_secs_f64() - 0.1).abs() < 1e-6);
    }
}
