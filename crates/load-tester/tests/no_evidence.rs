//! No verdict without evidence: against a plain nginx (a real HTTP server
//! with no `/metrics`), the latency and error criteria are measured, but the
//! service criteria (cache hit rate, breakers, pool, restarts) have no source.
//! They are not evaluated, the run exits 3 and names them; waiving each by
//! name with `--skip-check` turns the same run into a pass.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::{check, load_tester, report, text};
use shared_types::Verdict;

const SERVICE_CRITERIA: [&str; 4] =
    ["cache-hit-rate", "circuit-breakers", "pool-utilisation", "restarts"];

fn run_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args =
        vec!["run", "--target", url, "--users", "4", "--duration", "2s", "--output", "json"];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_without_metrics_exits_3_listing_what_was_not_evaluated() {
    let nginx = testkit::Nginx::start().await.expect("nginx (scripts/install-deps.sh installs it)");
    let scenario =
        std::env::temp_dir().join(format!("postlaunch-static-{}.yaml", std::process::id()));
    std::fs::write(&scenario, "scenarios:\n  - name: static\n    transactions:\n      - name: index\n        request: { path: /index.html }\n").unwrap();
    let scenario = scenario.display().to_string();

    let output = load_tester(&run_args(nginx.url(), &["--scenario", &scenario])).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let unmeasured = report(&output);
    assert_eq!(check(&unmeasured, "p95-latency").verdict, Verdict::Pass, "latency was measured");
    for id in SERVICE_CRITERIA {
        let c = check(&unmeasured, id);
        assert_eq!(c.verdict, Verdict::NotEvaluated, "{id}: {c:?}");
        assert!(
            c.detail.as_deref().is_some_and(|d| d.contains("--metrics-url")),
            "{id} says how: {c:?}"
        );
    }
    // The human output lists them too.
    let human = load_tester(&[
        "run",
        "--target",
        nginx.url(),
        "--users",
        "2",
        "--duration",
        "1s",
        "--scenario",
        &scenario,
    ])
    .await;
    assert_eq!(human.status.code(), Some(3));
    let out = String::from_utf8_lossy(&human.stdout);
    assert!(out.contains("not evaluated:") && out.contains("cache-hit-rate"), "{out}");

    let mut waive = vec!["--scenario", scenario.as_str()];
    for id in SERVICE_CRITERIA {
        waive.extend(["--skip-check", id]);
    }
    let output = load_tester(&run_args(nginx.url(), &waive)).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let waived = report(&output);
    for id in SERVICE_CRITERIA {
        let c = check(&waived, id);
        assert_eq!(c.verdict, Verdict::Skipped, "{id}");
        assert!(c.detail.as_deref().is_some_and(|d| d.contains("waived by --skip-check")), "{c:?}");
    }
}

/// A metrics URL that answers 200 with an HTML page is a failed scrape, not
/// a scrape of zero series: the service criteria are not evaluated and say
/// the page was HTML.
#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_url_answering_html_is_not_evaluated_not_zero_series() {
    let nginx = testkit::Nginx::start().await.expect("nginx (scripts/install-deps.sh installs it)");
    let scenario =
        std::env::temp_dir().join(format!("postlaunch-static-html-{}.yaml", std::process::id()));
    std::fs::write(&scenario, "scenarios:\n  - name: static\n    transactions:\n      - name: index\n        request: { path: /index.html }\n").unwrap();
    let scenario = scenario.display().to_string();
    let page = format!("{}/index.html", nginx.url());
    let output =
        load_tester(&run_args(nginx.url(), &["--scenario", &scenario, "--metrics-url", &page]))
            .await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let r = report(&output);
    for id in SERVICE_CRITERIA {
        let c = check(&r, id);
        assert_eq!(c.verdict, Verdict::NotEvaluated, "{id}: {c:?}");
        assert!(c.detail.as_deref().is_some_and(|d| d.contains("HTML")), "{id} says why: {c:?}");
    }
}
