//! A good release and its rollback on the local cluster (upstream 1.20.2
//! control plane, postlaunch-node): the sandbox as `shop`, v1 blue, v2
//! green; the prober's traffic goes through the active Service's proxy;
//! kubectl reads every result back. Then bad input, refused with exit 2 and
//! nothing changed, and an unreachable API server, exit 3.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::{Shop, assert_verdict, check, fingerprint, measure, strings, table};
use shared_types::Verdict;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_switches_at_one_instant_and_rolls_back_in_seconds() {
    let shop = Shop::start().await;
    let blue_before = fingerprint(&shop.get("deployment", "shop-blue"));

    // --dry-run: the plan is printed, the API server's objects are unchanged.
    let versions = shop.versions();
    let mut dry = strings(&["deploy", "shop", "--image", "postlaunch/sandbox:v2", "--dry-run"]);
    dry.extend(shop.args());
    let (code, report, out) = shop.run(&dry, "dry").await;
    assert_eq!(code, 0, "{out}");
    let report = report.unwrap();
    let plan = check(&report, "plan").observed.clone().unwrap_or_default();
    assert!(plan.contains("create default/deployment/shop-green"), "{plan}");
    assert!(plan.contains("merge-patch default/service/shop"), "{plan}");
    assert_eq!(shop.versions(), versions, "--dry-run changed the cluster");
    assert!(
        !shop.kubectl(&["get", "deployment", "shop-green"]).status.success(),
        "dry run created green"
    );

    // The release.
    let smoke = common::root().join("docs/bluegreen-promoter/smoke.yaml").display().to_string();
    let job = common::root()
        .join("crates/bluegreen-promoter/tests/data/smoke-job.yaml")
        .display()
        .to_string();
    let load_tester =
        testkit::sandbox::workspace_binary("debug", "load-tester").display().to_string();
    // A 2 s run judges latency, errors, breakers and restarts; its cache hit
    // rate would depend on how busy the machine is, so not that, and the
    // database pool is the catalog's (the gateway has none to export).
    let scenario =
        common::root().join("docs/bluegreen-promoter/smoke-load.yaml").display().to_string();
    let smoke_load = format!(
        "--scenario {scenario} --users 4 --duration 2s --threshold cache_hit_rate>=0% \
         --skip-check pool-utilisation"
    );
    let mut deploy = strings(&[
        "deploy",
        "shop",
        "--image",
        "postlaunch/sandbox:v2",
        "--smoke",
        &smoke,
        "--watch-for",
        "3s",
        "--probe-rate",
        "50",
        "--smoke-job",
        &job,
        "--smoke-load",
        &smoke_load,
        "--load-tester",
        &load_tester,
        "--pre-switch-cmd",
        "test \"$BLUEGREEN_COLOUR\" = green && test \"$BLUEGREEN_IMAGES\" = postlaunch/sandbox:v2",
    ]);
    deploy.extend(shop.args());
    let (code, report, out) = shop.run(&deploy, "deploy").await;
    let report = report.unwrap_or_else(|| panic!("no report: {out}"));
    eprintln!("{}\n{:?}", table(&report), report.measurements);
    assert_eq!(code, 0, "{out}\n{}", table(&report));
    for id in [
        "green-ready",
        "preview-health",
        "smoke",
        "blue-untouched",
        "switch",
        "deploy-time",
        "post-promotion",
        "failed-requests",
        "traffic-moved",
    ] {
        assert_verdict(&report, id, Verdict::Pass);
    }
    assert_eq!(measure(&report, "failed_requests"), 0.0);
    assert!(measure(&report, "probe_requests") > 50.0, "{:?}", report.measurements);
    let moved = check(&report, "traffic-moved").observed.clone().unwrap_or_default();
    assert!(moved.contains("0 v1 answers after the first v2"), "{moved}");
    // Seen from outside: kubectl and plain HTTP.
    assert_eq!(shop.serving(), "green");
    shop.wait_version(&shop.active_url, "v2").await;
    let jobs = shop.kubectl_ok(&["get", "jobs", "-o", "name"]);
    assert!(jobs.trim().is_empty(), "the smoke Job was left behind: {jobs}");
    let green = shop.get("deployment", "shop-green");
    assert_eq!(
        green["spec"]["template"]["spec"]["containers"][0]["image"],
        "postlaunch/sandbox:v2"
    );
    // Blue untouched, and still scaled for an instant rollback.
    assert_eq!(fingerprint(&shop.get("deployment", "shop-blue")), blue_before, "blue changed");
    let service = shop.get("service", "shop");
    assert!(
        service["metadata"]["annotations"]["bluegreen.postlaunch.dev/scale-down"]
            .as_str()
            .unwrap()
            .contains("blue")
    );

    // status and history read it back.
    let (code, status, _) = common::run(
        &[
            strings(&["status", "shop", "--output", "json", "--kubeconfig"]),
            vec![shop.cluster.kubeconfig().display().to_string()],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["active"], "green");
    assert_eq!(status["colours"]["blue"]["ready"], 2);
    assert_eq!(status["last_release"]["outcome"], "promoted");

    // Rollback within the scale-down delay: one patch, no pod, seconds.
    let pods_before = shop.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=shop",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut rollback = strings(&["rollback", "shop", "--probe-rate", "50"]);
    rollback
        .extend(shop.args().into_iter().filter(|a| a != "--preview-url" && *a != shop.preview_url));
    let (code, report, out) = shop.run(&rollback, "rollback").await;
    let report = report.unwrap_or_else(|| panic!("no report: {out}"));
    eprintln!("{}\n{:?}", table(&report), report.measurements);
    assert_eq!(code, 0, "{out}\n{}", table(&report));
    for id in ["rollback-time", "no-new-pods", "failed-requests", "traffic-moved"] {
        assert_verdict(&report, id, Verdict::Pass);
    }
    let seconds = measure(&report, "rollback_seconds");
    assert!(seconds < 5.0, "rollback took {seconds} s");
    assert_eq!(shop.serving(), "blue");
    shop.wait_version(&shop.active_url, "v1").await;
    let pods_after = shop.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=shop",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut a: Vec<&str> = pods_before.split_whitespace().collect();
    let mut b: Vec<&str> = pods_after.split_whitespace().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "the rollback created or removed pods");

    let (code, history, _) = common::run(
        &[
            strings(&["history", "shop", "--output", "json", "--kubeconfig"]),
            vec![shop.cluster.kubeconfig().display().to_string()],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let outcomes: Vec<&str> =
        history.as_array().unwrap().iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["promoted", "rollback"], "{history}");

    // After the scale-down delay: blue scaled to 0, then a rollback scales it
    // back up, waits for ready and switches, still with no failed request.
    let mut deploy =
        strings(&["deploy", "shop", "--image", "postlaunch/sandbox:v3", "--watch-for", "0s"]);
    deploy.extend(shop.args());
    let (code, _, out) = shop.run(&deploy, "deploy-v3").await;
    assert_eq!(code, 0, "{out}");
    let mut scale = strings(&["scale-down", "shop", "--now"]);
    scale.extend(shop.args().into_iter().take(6));
    let (code, report, out) = shop.run(&scale, "scale-down").await;
    assert_eq!(code, 0, "{out}");
    assert!(
        check(&report.unwrap(), "scale-down")
            .observed
            .clone()
            .unwrap_or_default()
            .contains("blue scaled to 0")
    );
    assert_eq!(shop.get("deployment", "shop-blue")["spec"]["replicas"], 0);
    let (code, report, out) = shop.run(&rollback, "rollback-scaled").await;
    let report = report.unwrap_or_else(|| panic!("no report: {out}"));
    eprintln!("{}", table(&report));
    assert_eq!(code, 0, "{out}\n{}", table(&report));
    for id in ["scaled-up", "rollback-time", "failed-requests", "traffic-moved"] {
        assert_verdict(&report, id, Verdict::Pass);
    }
    assert_eq!(check(&report, "no-new-pods").verdict, Verdict::Skipped);
    assert_eq!(shop.serving(), "blue");
    assert_eq!(shop.get("deployment", "shop-blue")["spec"]["replicas"], 2);
    shop.wait_version(&shop.active_url, "v1").await;

    // Bad input: exit 2, nothing changed.
    let versions = shop.versions();
    let kubeconfig = shop.cluster.kubeconfig().display().to_string();
    let bad_smoke = shop.file(
        "bad-smoke.yaml",
        "requests:\n  - name: a\n    path: /x\n    expect: {status: soon}\n",
    );
    shop.kubectl_ok(&["create", "service", "clusterip", "ghost", "--tcp=80:8080"]);
    shop.kubectl_ok(&["set", "selector", "service", "ghost", "app=ghost,colour=blue"]);
    let versions_with_ghost = shop.versions();
    let _ = versions;
    for (args, needle) in [
        (vec!["deploy", "nosuch", "--image", "x:v2"], "no Service default/nosuch"),
        (
            vec!["deploy", "shop", "--image", "x:v2", "--smoke", bad_smoke.as_str()],
            "bad-smoke.yaml:4:",
        ),
        (vec!["deploy", "ghost", "--image", "x:v2"], "no Deployment"),
        (vec!["deploy", "shop", "--image", "x:v2", "--preview-url", "ftp://x"], "http://"),
        (vec!["rollback", "nosuch"], "no Service"),
    ] {
        let mut all = strings(&args);
        all.extend([
            "--kubeconfig".to_owned(),
            kubeconfig.clone(),
            "--allow-namespace".to_owned(),
            "default".to_owned(),
        ]);
        let (code, _, stderr) = common::run(&all).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A namespace outside the allow-list.
    let mut all = strings(&[
        "deploy",
        "shop",
        "--image",
        "postlaunch/sandbox:v3",
        "--kubeconfig",
        &kubeconfig,
        "--allow-namespace",
        "staging",
    ]);
    all.extend(["--watch-for".to_owned(), "0s".to_owned()]);
    let (code, _, stderr) = common::run(&all).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not in the allow-list"), "{stderr}");
    assert_eq!(shop.versions(), versions_with_ghost, "bad input changed the cluster");

    // The API server unreachable: exit 3.
    let dead = shop.file(
        "dead-kubeconfig",
        &std::fs::read_to_string(shop.cluster.kubeconfig()).unwrap().replace(
            &shop.cluster.server_url(),
            &format!("https://127.0.0.1:{}", testkit::free_port()),
        ),
    );
    let (code, _, stderr) = common::run(&strings(&["status", "shop", "--kubeconfig", &dead])).await;
    assert_eq!(code, 3, "{stderr}");
}
