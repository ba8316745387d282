//! `cargo xtask verify --plan FILE`: the KPI table filled from the team's own
//! system (here a second sandbox on other ports, with its own database and a
//! Prometheus scraping it), its trend over two months, the table in every
//! output (report.html read back by Debian's headless Chromium), slow queries
//! from pg_stat_statements, and plans refused before anything runs.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shared_types::Verdict;
use xtask::kpi::{Row, Status};
use xtask::plan::LoadedPlan;
use xtask::verify::{self, VerifyOptions};

fn verify_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).arg("verify").args(args).output().unwrap()
}

fn kpis(report: &shared_types::Report) -> Vec<Row> {
    serde_json::from_value(report.data["kpis"].clone()).unwrap()
}

fn kpi<'a>(rows: &'a [Row], id: &str) -> &'a Row {
    rows.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no KPI {id} in {rows:#?}"))
}

#[test]
fn a_plan_with_an_unknown_key_or_a_host_not_allowed_exits_2_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_arg = out.display().to_string();
    for (text, expect) in [
        (
            "system:\n  gateway: http://127.0.0.1:9\n  prometeus:\n    url: http://127.0.0.1:9090\nsteps: [sandbox]\n",
            ":3:3 system.prometeus: unknown field `prometeus`",
        ),
        (
            "system:\n  gateway: http://shop.example.com\nsteps: [sandbox]\n",
            ":2:3 system.gateway: host \"shop.example.com\" is not in allow.hosts",
        ),
        (
            "system:\n  gateway: http://127.0.0.1:9\nsteps: [chaos-runner]\nchaos:\n  experiment: x.yaml\n",
            ":3:1 steps: chaos-runner changes the system it runs against: list it under enable_changes",
        ),
    ] {
        let plan = dir.path().join("verify.yaml");
        std::fs::write(&plan, text).unwrap();
        let output = verify_cli(&["--plan", &plan.display().to_string(), "--out-dir", &out_arg]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{}{expect}", plan.display())), "{expect:?} in {stderr}");
        assert!(!out.exists(), "nothing ran, nothing was written");
    }
}

/// A second sandbox started as if it were the team's system: its own
/// PostgreSQL (with pg_stat_statements), other ports, a Prometheus of its own.
struct TeamSystem {
    sandbox: testkit::Sandbox,
    prometheus: testkit::Prometheus,
    database: testkit::ScratchPostgres,
}

async fn team_system() -> TeamSystem {
    let database = testkit::ScratchPostgres::start(&[
        ("shared_preload_libraries", "'pg_stat_statements'"),
        ("pg_stat_statements.track_utility", "off"),
    ])
    .await
    .unwrap();
    let url = database.url("postgres");
    let options = shared_types::pg::PgConnectOptions::parse(&url).unwrap();
    let client = options.connect(Duration::from_secs(10)).await.unwrap();
    client.batch_execute("CREATE EXTENSION pg_stat_statements").await.unwrap();
    let sandbox = testkit::Sandbox::start(
        &["--collections", "20", "--nfts", "200", "--database-url", &url].map(String::from),
    )
    .await
    .unwrap();
    let prometheus = testkit::Prometheus::start(testkit::PrometheusOptions {
        targets: vec![sandbox.addr().to_string()],
        ..testkit::PrometheusOptions::default()
    })
    .await
    .unwrap();
    TeamSystem { sandbox, prometheus, database }
}

fn write_plan(dir: &Path, system: &TeamSystem, prometheus: &str, steps: &str) -> LoadedPlan {
    let text = format!(
        "# the team's system\nsystem:\n  gateway: {gateway}\n  database: {db}\n  prometheus:\n    \
         url: {prom}\n    selector: 'job=\"postlaunch\"'\n    window: 1m\nsteps: {steps}\nload:\n  \
         users: 4\n  duration: 4s\n",
        gateway = system.sandbox.url(),
        db = system.database.url("postgres"),
        prom = prometheus,
    );
    let path = dir.join("verify.yaml");
    std::fs::write(&path, text).unwrap();
    LoadedPlan::read(&path).unwrap()
}

async fn set_faults(sandbox: &testkit::Sandbox, faults: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/admin/faults", sandbox.url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The month's traffic before the run: requests until `prometheus` holds
/// them over the window (its scrapes lag the requests by up to an interval).
async fn traffic_seen_by(system: &TeamSystem, prometheus: &testkit::Prometheus) {
    let client = reqwest::Client::new();
    let query = "sum(rate(http_request_duration_seconds_count{job=\"postlaunch\"}[1m])) > 0";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        for n in 1..=5 {
            let url = format!("{}/api/collections/{n}", system.sandbox.url());
            assert_eq!(client.get(url).send().await.unwrap().status(), 200);
        }
        if prometheus.wait_for_query(query, Duration::from_secs(2)).await.is_ok() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "Prometheus never saw the traffic");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_takes_every_kpi_from_the_teams_system_and_a_slower_month_fails_the_p95() {
    let system = team_system().await;
    let dir = tempfile::tempdir().unwrap();
    let steps = "[sandbox, load-tester, database]";
    let plan = write_plan(dir.path(), &system, system.prometheus.url(), steps);
    let history = dir.path().join("history");
    let options = |plan: &LoadedPlan, month: &str, out: &str| VerifyOptions {
        out_dir: dir.path().join(out),
        plan: Some(plan.clone()),
        history_dir: history.clone(),
        month: month.to_owned(),
        // Would start the built-in sandbox if the plan were ignored: a
        // binary that does not exist makes that fail loudly.
        sandbox_binary: Some(PathBuf::from("/nonexistent/sandbox")),
        ..VerifyOptions::default()
    };

    // November: the system is fast.
    traffic_seen_by(&system, &system.prometheus).await;
    let november = verify::run(&options(&plan, "2026-11", "nov")).await.unwrap();
    assert_eq!(november.target, format!("plan {}", plan.path.display()));
    let sandbox_step: shared_types::Report = shared_types::Report::from_json(
        &std::fs::read_to_string(dir.path().join("nov/sandbox.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sandbox_step.target,
        system.sandbox.url(),
        "the step ran against the plan's gateway"
    );
    let rows = kpis(&november);
    assert_eq!(rows.len(), 8);
    let p95 = kpi(&rows, "p95");
    assert_eq!(p95.status, Status::Met, "{p95:#?}");
    assert!(p95.source.contains(system.prometheus.url()), "{}", p95.source);
    let uptime = kpi(&rows, "uptime");
    assert_eq!(uptime.status, Status::Met, "{uptime:#?}");
    assert!(uptime.value.unwrap() > 99.9);
    let query_time = kpi(&rows, "db-query-time");
    assert_eq!(query_time.status, Status::Met, "{query_time:#?}");
    assert!(query_time.source.contains("pg_stat_statements"), "{}", query_time.source);
    for id in ["load-capacity", "infrastructure-cost", "mttr"] {
        assert_eq!(kpi(&rows, id).status, Status::NotRun, "{:#?}", kpi(&rows, id));
    }
    assert!(dir.path().join("history/2026-11.json").exists());

    // December: the gateway answers 600 ms late. A Prometheus started now
    // holds only December's traffic (the month's window), so no sleep has
    // to age November's out.
    let december_prometheus = testkit::Prometheus::start(testkit::PrometheusOptions {
        targets: vec![system.sandbox.addr().to_string()],
        ..testkit::PrometheusOptions::default()
    })
    .await
    .unwrap();
    let plan = write_plan(dir.path(), &system, december_prometheus.url(), steps);
    set_faults(&system.sandbox, serde_json::json!({ "latency_ms": 600 })).await;
    traffic_seen_by(&system, &december_prometheus).await;
    let december = verify::run(&options(&plan, "2026-12", "dec")).await.unwrap();
    let rows = kpis(&december);
    let p95 = kpi(&rows, "p95");
    assert_eq!(p95.status, Status::Missed, "{p95:#?}");
    assert!(p95.value.unwrap() >= 500.0, "{p95:#?}");
    assert_eq!(p95.previous_month.as_deref(), Some("2026-11"));
    assert!(p95.previous.unwrap() < 500.0);
    assert_eq!(p95.baseline, p95.previous, "the first month recorded is the baseline");
    let check = december.checks.iter().find(|c| c.id == "kpi/p95").unwrap();
    assert_eq!(check.verdict, Verdict::Fail);
    assert_eq!(december.exit_code().code(), 1, "a KPI worse than its target fails the run");

    // The same table in every output, with the trend.
    let markdown = std::fs::read_to_string(dir.path().join("dec/report.md")).unwrap();
    assert!(markdown.contains("| P95 response time | < 500 ms |"), "{markdown}");
    assert!(markdown.contains("(worse)"), "the change column shows the trend: {markdown}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("dec/report.json")).unwrap())
            .unwrap();
    assert_eq!(json["data"]["kpis"].as_array().unwrap().len(), 8);
    let text = verify::render_summary(&december, shared_types::OutputFormat::Human);
    assert!(text.contains("KPIs 2026-12"), "{text}");
    assert_html_has_eight_rows(&dir.path().join("dec/report.html"));
}

/// Opens the page in Debian's headless Chromium and counts the KPI rows of
/// the DOM it built.
fn assert_html_has_eight_rows(page: &Path) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Debian's chromium (scripts/install-deps.sh installs it)");
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(dom.matches("<tr class=\"kpi\"").count(), 8, "{dom}");
    for id in verify_kpi_ids() {
        assert!(dom.contains(&format!("data-kpi=\"{id}\"")), "{id} in {dom}");
    }
    assert!(dom.contains("<svg"), "one chart per KPI: {dom}");
}

fn verify_kpi_ids() -> [&'static str; 8] {
    xtask::kpi::IDS
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_query_shows_as_the_slowest_and_fails_no_query_slower_than_1s() {
    let system = team_system().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &system, system.prometheus.url(), "[database]");
    set_faults(&system.sandbox, serde_json::json!({ "slow_query_ms": 1200 })).await;
    let client = reqwest::Client::new();
    for q in ["cosmic", "neon"] {
        let response =
            client.get(format!("{}/api/search?q={q}", system.sandbox.url())).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let options = VerifyOptions {
        out_dir: dir.path().join("out"),
        plan: Some(plan),
        history_dir: dir.path().join("history"),
        ..VerifyOptions::default()
    };
    let report = verify::run(&options).await.unwrap();
    let slow = report.checks.iter().find(|c| c.id == "database/slow-queries").unwrap();
    assert_eq!(slow.verdict, Verdict::Fail, "{slow:#?}");
    let detail = slow.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("pg_sleep") && detail.contains("ILIKE"), "{detail}");
    let step: shared_types::Report = shared_types::Report::from_json(
        &std::fs::read_to_string(dir.path().join("out/database.json")).unwrap(),
    )
    .unwrap();
    let slowest = &step.data["slowest_statements"][0];
    assert!(slowest["query"].as_str().unwrap().contains("ILIKE"), "{slowest}");
    assert!(slowest["mean_ms"].as_f64().unwrap() >= 1200.0, "{slowest}");
    assert_eq!(report.exit_code().code(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_run_keeps_the_chaos_journal_an_interrupted_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let journal = out.join("chaos-runner-state/journal.jsonl");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(&journal, "{\"event\":\"applied\"}\n").unwrap();
    let plan = dir.path().join("verify.yaml");
    // The experiment file does not exist: chaos-runner refuses it, and
    // nothing may have removed the journal `recover` needs.
    std::fs::write(
        &plan,
        "steps: [chaos-runner]\nenable_changes: [chaos-runner]\nchaos:\n  experiment: missing.yaml\n",
    )
    .unwrap();
    let options = VerifyOptions {
        out_dir: out.clone(),
        plan: Some(LoadedPlan::read(&plan).unwrap()),
        history_dir: dir.path().join("history"),
        ..VerifyOptions::default()
    };
    let report = verify::run(&options).await.unwrap();
    assert_ne!(report.exit_code().code(), 0, "a missing experiment is no pass");
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "{\"event\":\"applied\"}\n");
}
