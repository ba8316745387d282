//! The launch plan's monthly KPI table, filled from the steps' own reports
//! (and, when the plan names one, the system's Prometheus over the month),
//! with the previous month's value and the baseline from the history.
//!
//! Each KPI has exactly one source, named in its row. A KPI whose source gave
//! nothing is "not measured" with the reason, never a default: a not-evaluated
//! check (exit 3) unless the plan waives it by id, or skipped when its step
//! was not asked for. A measured KPI that misses its target fails (exit 1).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared_types::{Check, Op, Report};

use crate::plan::PrometheusPlan;

/// The KPI ids, in the launch plan's order.
pub const IDS: [&str; 8] = [
    "p95",
    "error-rate",
    "uptime",
    "mttr",
    "load-capacity",
    "db-query-time",
    "cache-hit-rate",
    "infrastructure-cost",
];

/// One KPI of the launch plan.
#[derive(Debug, Clone, Copy)]
pub struct Kpi {
    /// Stable id (check id `kpi/<id>`, waiver key, history key).
    pub id: &'static str,
    /// As the launch plan names it.
    pub name: &'static str,
    /// Unit of the value.
    pub unit: &'static str,
    /// The target, in `unit`.
    pub target: f64,
    /// How the value meets it: `value op target` (the threshold language's
    /// operators).
    pub op: Op,
    /// The target as the launch plan writes it.
    pub target_text: &'static str,
}

/// The launch plan's KPIs and targets.
pub const KPIS: [Kpi; 8] = [
    Kpi {
        id: "p95",
        name: "P95 response time",
        unit: "ms",
        target: 500.0,
        op: Op::Lt,
        target_text: "< 500 ms",
    },
    Kpi {
        id: "error-rate",
        name: "Error rate",
        unit: "%",
        target: 0.1,
        op: Op::Lt,
        target_text: "< 0.1 %",
    },
    Kpi {
        id: "uptime",
        name: "Uptime",
        unit: "%",
        target: 99.9,
        op: Op::Ge,
        target_text: ">= 99.9 %",
    },
    Kpi { id: "mttr", name: "MTTR", unit: "s", target: 900.0, op: Op::Lt, target_text: "< 15 min" },
    Kpi {
        id: "load-capacity",
        name: "Load capacity",
        unit: "users",
        target: 10_000.0,
        op: Op::Ge,
        target_text: ">= 10K users",
    },
    Kpi {
        id: "db-query-time",
        name: "Database query time",
        unit: "ms",
        target: 100.0,
        op: Op::Lt,
        target_text: "< 100 ms",
    },
    Kpi {
        id: "cache-hit-rate",
        name: "Cache hit rate",
        unit: "%",
        target: 80.0,
        op: Op::Gt,
        target_text: "> 80 %",
    },
    Kpi {
        id: "infrastructure-cost",
        name: "Infrastructure cost",
        unit: "%",
        target: -30.0,
        op: Op::Lt,
        target_text: "-30 % vs baseline",
    },
];

/// What became of a KPI this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured and within target.
    Met,
    /// Measured and outside target: the run fails.
    Missed,
    /// Applies, could not be measured: the run is not evaluated (exit 3).
    NotMeasured,
    /// Not measured, waived by the plan with a reason.
    Waived,
    /// Its source step was not asked for (`--step`, the plan's `steps`).
    NotRun,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "MISSED",
            Status::NotMeasured => "not measured",
            Status::Waived => "waived",
            Status::NotRun => "not run",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// KPI id.
    pub id: String,
    /// KPI name.
    pub name: String,
    /// The target as written.
    pub target: String,
    /// This run's value, in `unit`; for infrastructure cost the change
    /// against the baseline month.
    pub value: Option<f64>,
    /// Unit of `value`.
    pub unit: String,
    /// Where the value came from (a step's report, a query).
    pub source: String,
    /// What the value rests on, or why there is none.
    pub evidence: String,
    /// Met, missed, not measured, waived, not run.
    pub status: Status,
    /// The previous month's value, from the history.
    #[serde(default)]
    pub previous: Option<f64>,
    /// The month `previous` is from.
    #[serde(default)]
    pub previous_month: Option<String>,
    /// The first recorded month's value.
    #[serde(default)]
    pub baseline: Option<f64>,
    /// The month `baseline` is from.
    #[serde(default)]
    pub baseline_month: Option<String>,
    /// The raw figure behind a relative KPI (infrastructure cost: cost per
    /// month), kept for the next month's comparison.
    #[serde(default)]
    pub raw: Option<f64>,
}

impl Row {
    /// The row as a check `kpi/<id>` of the merged report.
    pub fn check(&self) -> Check {
        let id = format!("kpi/{}", self.id);
        let criterion = format!("{} {}", self.name, self.target);
        let observed = self.value.map(|v| format!("{} {}", number(v), self.unit));
        let detail = format!("{}; source: {}", self.evidence, self.source);
        match self.status {
            Status::Met => {
                Check::pass(id, criterion, observed.unwrap_or_default()).with_detail(detail)
            }
            Status::Missed => {
                Check::fail(id, criterion, observed.unwrap_or_default()).with_detail(detail)
            }
            Status::NotMeasured => Check::not_evaluated(id, criterion, detail),
            Status::Waived | Status::NotRun => Check::skipped(id, criterion, detail),
        }
    }

    /// `current - previous`, in the row's unit.
    pub fn change(&self) -> Option<f64> {
        Some(self.value? - self.previous?)
    }
}

/// What the KPIs are computed from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Every step's own report, by step name.
    pub steps: &'a BTreeMap<String, Report>,
    /// The steps asked for this run.
    pub asked: &'a [String],
    /// The system's Prometheus, when the plan names one.
    pub prometheus: Option<&'a PrometheusPlan>,
    /// KPIs waived, with the reason.
    pub waive: &'a BTreeMap<String, String>,
    /// Earlier months.
    pub history: &'a History,
    /// This run's month, `YYYY-MM`.
    pub month: &'a str,
}

/// A value and what it rests on, or why there is none.
type Found = Result<(f64, String, String), (String, String)>;

/// Fills the table.
pub async fn collect(inputs: &Inputs<'_>) -> Vec<Row> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
    let mut rows = Vec::new();
    for kpi in KPIS {
        let (found, steps): (Found, &[&str]) = match kpi.id {
            "p95" => match inputs.prometheus {
                Some(p) => (prom_p95(&client, p).await, &[]),
                None => {
                    (from_load(inputs, "latency_p95", "p95 of every request"), &["load-tester"])
                }
            },
            "error-rate" => match inputs.prometheus {
                Some(p) => (prom_error_rate(&client, p).await, &[]),
                None => (from_load(inputs, "error_rate", "failed requests"), &["load-tester"]),
            },
            "uptime" => match inputs.prometheus {
                Some(p) => (prom_uptime(&client, p).await, &[]),
                None => (availability(inputs), &["bluegreen-promoter"]),
            },
            "mttr" => (mttr(inputs, &client).await, &["chaos-runner", "pg-failover-probe"]),
            "load-capacity" => (capacity(inputs), &["capacity"]),
            "db-query-time" => (query_time(inputs), &["database"]),
            "cache-hit-rate" => match inputs.prometheus {
                Some(p) => (prom_hit_rate(&client, p).await, &[]),
                None => (from_load(inputs, "cache_hit_rate", "cache hits"), &["load-tester"]),
            },
            _ => (cost(inputs), &["cost-analyzer"]),
        };
        let mut row = Row {
            id: kpi.id.to_owned(),
            name: kpi.name.to_owned(),
            target: kpi.target_text.to_owned(),
            value: None,
            unit: kpi.unit.to_owned(),
            source: String::new(),
            evidence: String::new(),
            status: Status::NotMeasured,
            previous: None,
            previous_month: None,
            baseline: None,
            baseline_month: None,
            raw: None,
        };
        match found {
            Ok((value, source, evidence)) => {
                row.value = Some(value);
                row.source = source;
                row.evidence = evidence;
                let met = kpi.op.holds(value, kpi.target);
                row.status = if met { Status::Met } else { Status::Missed };
            }
            Err((source, why)) => {
                row.source = source;
                row.evidence = why;
                let ran =
                    steps.is_empty() || steps.iter().any(|s| inputs.asked.iter().any(|a| a == s));
                row.status = if let Some(reason) = inputs.waive.get(kpi.id) {
                    row.evidence = format!("{}; waived: {reason}", row.evidence);
                    Status::Waived
                } else if ran {
                    Status::NotMeasured
                } else {
                    Status::NotRun
                };
            }
        }
        if kpi.id == "infrastructure-cost" {
            row.raw =
                inputs.steps.get("cost-analyzer").and_then(|r| measurement(r, "monthly_cost"));
        }
        inputs.history.annotate(&mut row, inputs.month);
        rows.push(row);
    }
    rows
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn measurement(report: &Report, name: &str) -> Option<f64> {
    report.measurements.iter().find(|m| m.name == name).map(|m| m.value).filter(|v| v.is_finite())
}

fn from_load(inputs: &Inputs<'_>, name: &str, what: &str) -> Found {
    let source = "load-tester step".to_owned();
    let Some(report) = inputs.steps.get("load-tester") else {
        return Err((source, "the load-tester step did not run".to_owned()));
    };
    let requests = measurement(report, "requests_total").unwrap_or(0.0);
    // The cache hit rate is per watched service, named `cache_hit_rate <at>`.
    let found = report
        .measurements
        .iter()
        .find(|m| m.name == name || m.name.starts_with(&format!("{name} ")))
        .filter(|m| m.value.is_finite());
    match found {
        Some(m) if requests > 0.0 => Ok((
            m.value,
            format!("{source} ({})", report.target),
            format!("{what} over {requests:.0} requests of the built-in scenario ({})", m.name),
        )),
        Some(_) => Err((source, "the load step sent no request".to_owned())),
        None => Err((
            source,
            format!(
                "the load step's report has no {name} measurement ({})",
                report.verdict().label()
            ),
        )),
    }
}

fn availability(inputs: &Inputs<'_>) -> Found {
    let source = "the fault steps' probers (bluegreen-promoter)".to_owned();
    let Some(report) = inputs.steps.get("bluegreen-promoter") else {
        return Err((
            source,
            "no Prometheus in the plan and no fault step with a prober ran: give \
             system.prometheus (up over the month) or run bluegreen-promoter"
                .to_owned(),
        ));
    };
    let sum = |suffix: &str| -> f64 {
        report
            .measurements
            .iter()
            .filter(|m| m.name == suffix || m.name.ends_with(&format!("/{suffix}")))
            .map(|m| m.value)
            .filter(|v| v.is_finite())
            .sum()
    };
    let (requests, failed) = (sum("probe_requests"), sum("failed_requests"));
    if requests == 0.0 {
        return Err((source, "the release step's prober sent no request".to_owned()));
    }
    Ok((
        (requests - failed) / requests * 100.0,
        source,
        format!(
            "{failed:.0} of {requests:.0} probe requests failed during the release and its \
             rollback (a new connection each)"
        ),
    ))
}

async fn mttr(inputs: &Inputs<'_>, client: &reqwest::Client) -> Found {
    let mut recoveries: Vec<(String, f64)> = Vec::new();
    if let Some(report) = inputs.steps.get("chaos-runner") {
        for m in &report.measurements {
            if let Some(row) = m.name.strip_suffix(".recover_seconds")
                && m.value.is_finite()
            {
                recoveries.push((format!("chaos {row}"), m.value));
            }
        }
    }
    if let Some(report) = inputs.steps.get("pg-failover-probe")
        && let Some(ms) = measurement(report, "write_downtime")
    {
        recoveries.push(("failover drill".to_owned(), ms / 1000.0));
    }
    let mut sources = vec!["chaos-runner and pg-failover-probe steps".to_owned()];
    if let Some(p) = inputs.prometheus {
        sources.push(format!("ALERTS episodes in {}", p.url));
        match alert_episodes(client, p).await {
            Ok(episodes) => recoveries.extend(episodes),
            Err(e) => {
                return Err((sources.join(" + "), format!("cannot read the month's alerts: {e}")));
            }
        }
    }
    let source = sources.join(" + ");
    if recoveries.is_empty() {
        return Err((
            source,
            "no recovery was measured: no chaos experiment or failover drill recovered in this \
             run and no alert fired and resolved"
                .to_owned(),
        ));
    }
    let mean = recoveries.iter().map(|(_, s)| s).sum::<f64>() / recoveries.len() as f64;
    let mut listed: Vec<String> =
        recoveries.iter().take(8).map(|(what, s)| format!("{what} {s:.1} s")).collect();
    if recoveries.len() > 8 {
        listed.push(format!("and {} more", recoveries.len() - 8));
    }
    Ok((mean, source, format!("mean of {} recoveries: {}", recoveries.len(), listed.join(", "))))
}

fn capacity(inputs: &Inputs<'_>) -> Found {
    let source = "capacity step (load-tester capacity)".to_owned();
    let Some(report) = inputs.steps.get("capacity") else {
        return Err((source, "the capacity step did not run".to_owned()));
    };
    let steps = report.data.get("capacity_steps").and_then(|s| s.as_array());
    let tried: Vec<(u64, bool)> = steps
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| Some((s.get("users")?.as_u64()?, s.get("held")?.as_bool()?)))
                .collect()
        })
        .unwrap_or_default();
    let held = measurement(report, "load_capacity_users");
    let broke = tried.iter().find(|(_, held)| !held).map(|(u, _)| *u);
    let largest = tried.iter().map(|(u, _)| *u).max().unwrap_or(0);
    match (held, broke) {
        (Some(users), Some(at)) => {
            Ok((users, source, format!("highest load that held the criteria; broke at {at} users")))
        }
        (None, Some(at)) => Ok((0.0, source, format!("the first step broke, at {at} users"))),
        (Some(users), None) if users >= 10_000.0 => {
            Ok((users, source, "every step held, up to the search's end".to_owned()))
        }
        (Some(users), None) => Err((
            source,
            format!(
                "held every step up to {users:.0} users ({} steps, largest {largest}); the \
                 search stopped before 10,000 users: raise capacity.max_users",
                tried.len()
            ),
        )),
        (None, None) => {
            Err((source, format!("no capacity step ran ({})", report.verdict().label())))
        }
    }
}

fn query_time(inputs: &Inputs<'_>) -> Found {
    let source = "database step (pg_stat_statements)".to_owned();
    let Some(report) = inputs.steps.get("database") else {
        return Err((source, "the database step did not run".to_owned()));
    };
    match measurement(report, "query_time_mean") {
        Some(mean) => {
            let p95 = measurement(report, "query_time_p95").unwrap_or(f64::NAN);
            let calls = measurement(report, "calls").unwrap_or(0.0);
            Ok((
                mean,
                format!("{source}, {}", report.target),
                format!("mean execution time over {calls:.0} calls; p95 of statements {p95:.2} ms"),
            ))
        }
        None => {
            let why = report
                .checks
                .iter()
                .find(|c| c.id == "statements")
                .and_then(|c| c.detail.clone().or(c.observed.clone()))
                .unwrap_or_else(|| "no statement statistics".to_owned());
            Err((source, why))
        }
    }
}

fn cost(inputs: &Inputs<'_>) -> Found {
    let source = "cost-analyzer step, month over month".to_owned();
    let Some(report) = inputs.steps.get("cost-analyzer") else {
        return Err((source, "the cost-analyzer step did not run".to_owned()));
    };
    let Some(now) = measurement(report, "monthly_cost") else {
        return Err((source, "cost-analyzer measured no monthly cost".to_owned()));
    };
    let savings = measurement(report, "savings_percent")
        .map(|s| format!("; cost-analyzer finds {s:.1} % more to save"))
        .unwrap_or_default();
    match inputs.history.baseline_raw("infrastructure-cost", inputs.month) {
        Some((month, base)) if base > 0.0 => Ok((
            (now / base - 1.0) * 100.0,
            source,
            format!("{now:.2}/month now, {base:.2}/month in the baseline month {month}{savings}"),
        )),
        _ => Err((
            source,
            format!(
                "{now:.2}/month this month; no earlier month recorded, so this month becomes the \
                 baseline{savings}"
            ),
        )),
    }
}

fn matchers(p: &PrometheusPlan, extra: &str) -> String {
    let parts: Vec<&str> =
        [p.selector.trim(), extra].into_iter().filter(|s| !s.is_empty()).collect();
    format!("{{{}}}", parts.join(","))
}

async fn prom_p95(client: &reqwest::Client, p: &PrometheusPlan) -> Found {
    let q = format!(
        "histogram_quantile(0.95, sum by (le) (rate({}_bucket{}[{}])))",
        p.series.request_duration,
        matchers(p, ""),
        p.window
    );
    prom_value(client, p, &q, 1000.0, "p95 of the request histogram").await
}

async fn prom_error_rate(client: &reqwest::Client, p: &PrometheusPlan) -> Found {
    let q = format!(
        "sum(rate({r}{bad}[{w}])) / sum(rate({r}{all}[{w}]))",
        r = p.series.requests,
        bad = matchers(p, &format!("{}=~\"5..\"", p.series.status_label)),
        all = matchers(p, ""),
        w = p.window
    );
    prom_value(client, p, &q, 100.0, "share of 5xx answers").await
}

async fn prom_uptime(client: &reqwest::Client, p: &PrometheusPlan) -> Found {
    let q = format!("avg(avg_over_time(up{}[{}]))", matchers(p, ""), p.window);
    prom_value(client, p, &q, 100.0, "share of successful scrapes of the selected targets").await
}

async fn prom_hit_rate(client: &reqwest::Client, p: &PrometheusPlan) -> Found {
    let (h, m, w) = (&p.series.cache_hits, &p.series.cache_misses, &p.window);
    let sel = matchers(p, "");
    let q = format!(
        "sum(increase({h}{sel}[{w}])) / (sum(increase({h}{sel}[{w}])) + sum(increase({m}{sel}[{w}])))"
    );
    prom_value(client, p, &q, 100.0, "cache hits over hits and misses").await
}

async fn prom_value(
    client: &reqwest::Client,
    p: &PrometheusPlan,
    query: &str,
    scale: f64,
    what: &str,
) -> Found {
    let source = format!("Prometheus {} over {}", p.url, p.window);
    match prom_query(client, &p.url, query).await {
        Ok(Some(v)) if v.is_finite() => Ok((v * scale, source, format!("{what}: {query}"))),
        Ok(_) => {
            Err((source, format!("no value (no series or no traffic in the window): {query}")))
        }
        Err(e) => Err((source, format!("{e}: {query}"))),
    }
}

/// The first sample of an instant query, `None` when the answer is empty.
async fn prom_query(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<Option<f64>, String> {
    let body = prom_get(client, base, "query", &[("query", query.to_owned())]).await?;
    if body["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", body["error"]));
    }
    let value = body["data"]["result"].get(0).and_then(|r| r["value"][1].as_str());
    Ok(value.and_then(|v| v.parse().ok()))
}

/// Firing-to-resolved episodes of every alert over the window: (alert, seconds).
async fn alert_episodes(
    client: &reqwest::Client,
    p: &PrometheusPlan,
) -> Result<Vec<(String, f64)>, String> {
    let window = shared_types::parse_duration(&p.window).map_err(|e| e.to_string())?;
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let step = (window.as_secs_f64() / 2000.0).max(1.0).ceil();
    let params = [
        ("query", "ALERTS{alertstate=\"firing\"}".to_owned()),
        ("start", format!("{}", end - window.as_secs_f64())),
        ("end", format!("{end}")),
        ("step", format!("{step}")),
    ];
    let body = prom_get(client, &p.url, "query_range", &params).await?;
    let mut episodes = Vec::new();
    for series in body["data"]["result"].as_array().into_iter().flatten() {
        let name = series["metric"]["alertname"].as_str().unwrap_or("alert").to_owned();
        let times: Vec<f64> = series["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v[0].as_f64())
            .collect();
        for seconds in episodes_of(&times, step, end) {
            episodes.push((format!("alert {name}"), seconds));
        }
    }
    Ok(episodes)
}

/// GET `BASE/api/v1/{api}` with `params`: the answer's JSON.
async fn prom_get(
    client: &reqwest::Client,
    base: &str,
    api: &str,
    params: &[(&str, String)],
) -> Result<serde_json::Value, String> {
    let url = format!("{}/api/v1/{api}", base.trim_end_matches('/'));
    client
        .get(&url)
        .query(params)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: not a Prometheus answer: {e}"))
}

/// The resolved episodes of one alert series sampled every `step` seconds
/// up to `end`: consecutive samples one step apart are one episode; an
/// episode still firing at the end has not resolved and is not counted.
fn episodes_of(times: &[f64], step: f64, end: f64) -> Vec<f64> {
    let mut episodes = Vec::new();
    let mut start: Option<f64> = None;
    let mut last = f64::NAN;
    for &t in times {
        match start {
            Some(s) if t - last > step * 1.5 => {
                episodes.push(last - s + step);
                start = Some(t);
            }
            None => start = Some(t),
            _ => {}
        }
        last = t;
    }
    if let Some(s) = start
        && end - last > step * 1.5
    {
        episodes.push(last - s + step);
    }
    episodes
}

/// Earlier months' tables: `DIR/YYYY-MM.json`, the last run of each month.
#[derive(Debug, Default)]
pub struct History {
    months: Vec<(String, Vec<Row>)>,
}

/// One month's file.
#[derive(Debug, Serialize, Deserialize)]
struct MonthFile {
    month: String,
    kpis: Vec<Row>,
}

impl History {
    /// Reads every month file under `dir` (none yet: empty).
    pub fn load(dir: &Path) -> anyhow::Result<History> {
        let mut months = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
            Err(e) => anyhow::bail!("cannot read the history {}: {e}", dir.display()),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let file: MonthFile = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{}: not a verify history file: {e}", path.display())
            })?;
            months.push((file.month, file.kpis));
        }
        months.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(History { months })
    }

    /// Writes this month's table (replacing an earlier run of the month).
    pub fn record(dir: &Path, month: &str, rows: &[Row]) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{month}.json"));
        let file = MonthFile { month: month.to_owned(), kpis: rows.to_vec() };
        let text = serde_json::to_string_pretty(&file)?;
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    fn before<'a>(&'a self, month: &'a str) -> impl Iterator<Item = &'a (String, Vec<Row>)> + 'a {
        self.months.iter().filter(move |(m, _)| m.as_str() < month)
    }

    /// The first recorded month's raw figure for `id`.
    fn baseline_raw(&self, id: &str, month: &str) -> Option<(String, f64)> {
        self.before(month).find_map(|(m, rows)| {
            rows.iter().find(|r| r.id == id).and_then(|r| r.raw).map(|v| (m.clone(), v))
        })
    }

    /// Fills `previous` and `baseline` of `row` from the months before `month`.
    fn annotate(&self, row: &mut Row, month: &str) {
        let value_in = |rows: &Vec<Row>| rows.iter().find(|r| r.id == row.id).and_then(|r| r.value);
        if let Some((m, v)) =
            self.before(month).find_map(|(m, rows)| value_in(rows).map(|v| (m, v)))
        {
            row.baseline = Some(v);
            row.baseline_month = Some(m.clone());
        }
        let previous: Vec<&(String, Vec<Row>)> = self.before(month).collect();
        if let Some((m, v)) =
            previous.iter().rev().find_map(|(m, rows)| value_in(rows).map(|v| (m, v)))
        {
            row.previous = Some(v);
            row.previous_month = Some(m.clone());
        }
    }

    /// Each month's value of `id`, oldest first.
    pub fn series(&self, id: &str) -> Vec<(String, f64)> {
        self.months
            .iter()
            .filter_map(|(m, rows)| {
                rows.iter().find(|r| r.id == id).and_then(|r| r.value).map(|v| (m.clone(), v))
            })
            .collect()
    }
}

fn cell(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{} {unit}", number(v)))
}

fn change_cell(row: &Row) -> String {
    match row.change() {
        Some(c) => {
            // Lower is better where the target is an upper bound.
            let op = KPIS.iter().find(|k| k.id == row.id).map(|k| k.op);
            let better = match op {
                Some(Op::Lt | Op::Le) => c < 0.0,
                _ => c > 0.0,
            };
            let word = if c == 0.0 {
                "same"
            } else if better {
                "better"
            } else {
                "worse"
            };
            format!("{}{} {} ({word})", if c > 0.0 { "+" } else { "" }, number(c), row.unit)
        }
        None => "-".to_owned(),
    }
}

/// The columns of every rendering.
const HEADERS: [&str; 8] =
    ["KPI", "Target", "Baseline", "Previous", "Current", "Change", "Status", "Source"];

fn cells(row: &Row) -> [String; 8] {
    let status = match row.status {
        Status::Met | Status::Missed => row.status.label().to_owned(),
        _ => format!("{}: {}", row.status.label(), row.evidence),
    };
    [
        row.name.clone(),
        row.target.clone(),
        cell(row.baseline, &row.unit),
        cell(row.previous, &row.unit),
        cell(row.value, &row.unit),
        change_cell(row),
        status,
        row.source.clone(),
    ]
}

/// The table for a terminal.
pub fn render_text(rows: &[Row], month: &str) -> String {
    let table: Vec<[String; 8]> = rows.iter().map(cells).collect();
    // The status and source columns carry reasons: they are not padded.
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table.iter().map(|r| r[i].chars().count()).chain([HEADERS[i].len()]).max().unwrap_or(0)
        })
        .collect();
    let mut out = format!("\nKPIs {month} (the launch plan's monthly table)\n");
    let line = |cols: &[String]| -> String {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i < 6 {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(s, "{c}  ");
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    out.push_str(&line(&HEADERS.map(String::from)));
    for r in &table {
        out.push_str(line(&r[..6]).trim_end());
        let _ = writeln!(out, "  {}", r[6]);
        let _ = writeln!(out, "{:w$}  source: {}", "", r[7], w = widths[0]);
    }
    out
}

/// The table in Markdown.
pub fn render_markdown(rows: &[Row], month: &str) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!("## KPIs {month}\n\n| {} |\n", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADERS.len()));
    for row in rows {
        let c = cells(row);
        let _ = writeln!(out, "| {} |", c.iter().map(|s| esc(s)).collect::<Vec<_>>().join(" | "));
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A self-contained page: the table and one small chart per KPI over the
/// months (inline SVG, no script, nothing fetched).
pub fn render_html(rows: &[Row], history: &History, month: &str, verdict: &str) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>postlaunch verify: KPIs</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}\
         th{background:#f4f4f4}.met{color:#176317}.missed{color:#b00020;font-weight:bold}\
         .not_measured{color:#a05a00}.waived,.not_run{color:#666}svg{display:block}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>Monthly KPIs, {}</h1>\n<p>Overall verdict of the run: <strong>{}</strong></p>",
        html_escape(month),
        html_escape(verdict)
    );
    out.push_str("<table id=\"kpis\">\n<thead><tr>");
    for h in HEADERS.iter().chain(&["Months"]) {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        let c = cells(row);
        let status = serde_json::to_value(row.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = write!(out, "<tr class=\"kpi\" data-kpi=\"{}\" data-status=\"{status}\">", row.id);
        for (i, text) in c.iter().enumerate() {
            if i == 6 {
                let _ = write!(out, "<td class=\"{status}\">{}</td>", html_escape(text));
            } else {
                let _ = write!(out, "<td>{}</td>", html_escape(text));
            }
        }
        let mut points: Vec<(String, f64)> =
            history.series(&row.id).into_iter().filter(|(m, _)| m.as_str() < month).collect();
        if let Some(v) = row.value {
            points.push((month.to_owned(), v));
        }
        let _ = writeln!(out, "<td>{}</td></tr>", sparkline(&points, row));
    }
    out.push_str("</tbody></table>\n</body></html>\n");
    out
}

fn sparkline(points: &[(String, f64)], row: &Row) -> String {
    let (w, h, pad) = (160.0_f64, 40.0_f64, 4.0_f64);
    if points.is_empty() {
        return "<svg width=\"160\" height=\"40\" role=\"img\"><title>no value yet</title></svg>"
            .to_owned();
    }
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let step = if points.len() > 1 { (w - 2.0 * pad) / (points.len() - 1) as f64 } else { 0.0 };
    let xy: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (pad + step * i as f64, h - pad - (v - lo) / span * (h - 2.0 * pad)))
        .collect();
    let path: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let title: Vec<String> =
        points.iter().map(|(m, v)| format!("{m}: {} {}", number(*v), row.unit)).collect();
    let mut svg = format!(
        "<svg width=\"160\" height=\"40\" viewBox=\"0 0 160 40\" role=\"img\"><title>{}</title>\
         <polyline fill=\"none\" stroke=\"#3366cc\" stroke-width=\"2\" points=\"{}\"/>",
        html_escape(&title.join(", ")),
        path.join(" ")
    );
    for (x, y) in xy {
        let _ = write!(svg, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"#3366cc\"/>");
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, value: Option<f64>) -> Row {
        Row {
            id: id.to_owned(),
            name: id.to_owned(),
            target: "< 500 ms".to_owned(),
            value,
            unit: "ms".to_owned(),
            source: "test".to_owned(),
            evidence: "e".to_owned(),
            status: Status::Met,
            previous: None,
            previous_month: None,
            baseline: None,
            baseline_month: None,
            raw: None,
        }
    }

    #[test]
    fn targets_compare_with_the_threshold_operators() {
        let kpi = |id: &str| *KPIS.iter().find(|k| k.id == id).unwrap();
        let cache = kpi("cache-hit-rate");
        assert!(!cache.op.holds(80.0, cache.target), "> 80 %: exactly 80 misses");
        assert!(cache.op.holds(80.5, cache.target));
        let uptime = kpi("uptime");
        assert!(uptime.op.holds(99.9, uptime.target), ">= 99.9 %");
        let p95 = kpi("p95");
        assert!(!p95.op.holds(500.0, p95.target), "< 500 ms: 500 misses");
        assert!(!p95.op.holds(f64::NAN, p95.target));
    }

    #[test]
    fn history_gives_the_previous_month_and_the_first_as_baseline() {
        let history = History {
            months: vec![
                ("2026-09".to_owned(), vec![row("p95", Some(300.0))]),
                ("2026-10".to_owned(), vec![row("p95", None)]),
                ("2026-11".to_owned(), vec![row("p95", Some(420.0))]),
                ("2026-12".to_owned(), vec![row("p95", Some(999.0))]),
            ],
        };
        let mut now = row("p95", Some(450.0));
        history.annotate(&mut now, "2026-12");
        assert_eq!(now.baseline, Some(300.0));
        assert_eq!(now.previous, Some(420.0));
        assert_eq!(
            now.previous_month.as_deref(),
            Some("2026-11"),
            "this month's own run is not 'previous'"
        );
        assert_eq!(change_cell(&now), "+30 ms (worse)");
    }

    #[test]
    fn alert_episodes_split_on_gaps_and_skip_one_still_firing() {
        // Firing at 10..=40 (4 samples of 10 s), again at 100..=110, and from 190 on.
        let times = [10.0, 20.0, 30.0, 40.0, 100.0, 110.0, 190.0, 200.0];
        assert_eq!(episodes_of(&times, 10.0, 200.0), [40.0, 20.0], "the last one is unresolved");
        assert_eq!(episodes_of(&times, 10.0, 300.0), [40.0, 20.0, 20.0]);
        assert!(episodes_of(&[], 10.0, 300.0).is_empty());
    }

    #[test]
    fn renderings_hold_one_row_per_kpi_and_fetch_nothing() {
        let rows = vec![row("p95", Some(120.0)), row("mttr", None)];
        let md = render_markdown(&rows, "2026-12");
        assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 3, "{md}");
        let html = render_html(&rows, &History::default(), "2026-12", "PASS");
        assert_eq!(html.matches("<tr class=\"kpi\"").count(), 2);
        assert!(!html.contains("http"), "nothing fetched: {html}");
    }
}
