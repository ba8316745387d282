//! The promoter killed between the selector patch and the end of its watch,
//! then `recover`: the journal is read and the app left consistent (the
//! active Service on ready pods, the proven colour preferred). And Argo
//! Rollouts interop: promote and abort a blue-green `Rollout` with the
//! plugin's patches, read back by kubectl.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::time::{Duration, Instant};

use common::{Shop, assert_verdict, check, strings, table};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use shared_types::Verdict;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_release_is_recovered_and_argo_rollouts_are_promoted() {
    let shop = Shop::start().await;
    let mut args =
        strings(&["deploy", "shop", "--image", "postlaunch/sandbox:v2", "--watch-for", "300s"]);
    args.extend(shop.args());
    let mut child = std::process::Command::new(common::BIN)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while shop.serving() != "green" {
        assert!(started.elapsed() < Duration::from_secs(180), "never switched");
        assert!(child.try_wait().unwrap().is_none(), "the promoter ended before the switch");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-watch
    child.wait().unwrap();
    let journal = shop.dir.path().join("state/journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.contains("\"step\":\"switch\""), "{text}");
    assert!(!text.contains("\"step\":\"end\""), "{text}");

    // --dry-run first: nothing changes.
    let versions = shop.versions();
    let state = shop.dir.path().join("state").display().to_string();
    let kubeconfig = shop.cluster.kubeconfig().display().to_string();
    let recover = strings(&["recover", "--state-dir", &state, "--allow-namespace", "default"]);
    let (code, report, out) =
        shop.run(&[recover.clone(), strings(&["--dry-run"])].concat(), "dry").await;
    assert_eq!(code, 0, "{out}");
    assert!(table(&report.unwrap()).contains("would be: switched back to blue"), "{out}");
    assert_eq!(shop.versions(), versions);

    // recover reaches the cluster named in the journal (no --kubeconfig here).
    let (code, report, out) = shop.run(&recover, "recover").await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    eprintln!("{}", table(&report));
    assert_eq!(code, 0, "{out}");
    assert!(
        check(&report, "journal-read")
            .observed
            .clone()
            .unwrap_or_default()
            .contains("1 unfinished")
    );
    let release = report.checks.iter().find(|c| c.id.starts_with("release/")).unwrap();
    assert_eq!(release.verdict, Verdict::Pass, "{}", table(&report));
    assert!(release.observed.clone().unwrap_or_default().contains("switched back to blue"));
    assert_eq!(shop.serving(), "blue");
    shop.wait_version(&shop.active_url, "v1").await;
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.contains("\"step\":\"end\""), "{text}");
    let (code, report, _) = shop.run(&recover, "again").await;
    assert_eq!(code, 0);
    assert!(
        check(&report.unwrap(), "journal-read")
            .observed
            .clone()
            .unwrap_or_default()
            .contains("0 unfinished")
    );

    // Argo Rollouts: the CRD on the real API server, a paused blue-green Rollout.
    let crd = common::root().join("crates/bluegreen-promoter/tests/data/rollout-crd.yaml");
    shop.kubectl_ok(&["apply", "-f", crd.to_str().unwrap()]);
    shop.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/rollouts.argoproj.io",
        "--timeout=30s",
    ]);
    let rollout = shop.file(
        "rollout.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: shop}\nspec:\n  paused: true\n  replicas: 2\n\
         \x20 strategy: {blueGreen: {activeService: shop, previewService: shop-preview, autoPromotionEnabled: false}}\n",
    );
    shop.kubectl_ok(&["apply", "-f", &rollout]);
    let client = shop.cluster.client().await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let status = serde_json::json!({"status": {"pauseConditions": [{"reason": "BlueGreenPause", "startTime": "2026-12-04T00:00:00Z"}], "controllerPause": true, "currentPodHash": "b", "stableRS": "a"}});
    api.patch_status("shop", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let (code, report, out) = shop
        .run(
            &strings(&[
                "promote",
                "--rollout",
                "shop",
                "--kubeconfig",
                &kubeconfig,
                "--allow-namespace",
                "default",
            ]),
            "promote",
        )
        .await;
    let report = report.unwrap_or_else(|| panic!("{out}"));
    assert_eq!(code, 0, "{out}");
    assert_verdict(&report, "promote", Verdict::Pass);
    let after = shop.get("rollout", "shop");
    assert_eq!(after["spec"]["paused"], false, "{after}");
    assert!(after["status"]["pauseConditions"].is_null(), "{after}");
    assert_eq!(after["status"]["controllerPause"], true, "{after}");
    // Promoting again: nothing left to promote is a failure, not a silent pass.
    let (code, _, out) = shop
        .run(
            &strings(&[
                "promote",
                "--rollout",
                "shop",
                "--kubeconfig",
                &kubeconfig,
                "--allow-namespace",
                "default",
            ]),
            "again",
        )
        .await;
    assert_eq!(code, 1, "{out}");
    let (code, _, out) = shop
        .run(
            &strings(&[
                "promote",
                "--rollout",
                "shop",
                "--full",
                "--kubeconfig",
                &kubeconfig,
                "--allow-namespace",
                "default",
            ]),
            "full",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(shop.get("rollout", "shop")["status"]["promoteFull"], true);
    let (code, _, out) = shop
        .run(
            &strings(&[
                "abort",
                "--rollout",
                "shop",
                "--kubeconfig",
                &kubeconfig,
                "--allow-namespace",
                "default",
            ]),
            "abort",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(shop.get("rollout", "shop")["status"]["abort"], true);
    let (code, _, out) = shop
        .run(
            &strings(&[
                "promote",
                "--rollout",
                "nosuch",
                "--kubeconfig",
                &kubeconfig,
                "--allow-namespace",
                "default",
            ]),
            "nosuch",
        )
        .await;
    assert_eq!(code, 2, "{out}");
}
