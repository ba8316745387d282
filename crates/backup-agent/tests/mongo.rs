//! MongoDB round trip through a real wire-protocol server (nx-27017):
//! dump in mongodump's layout, restore into another database, every document back.

#![allow(clippy::unwrap_used)]

mod support;

use backup_agent::mongo;
use backup_agent::object::{Compression, UploadSettings};
use mongodb::bson::{Document, doc};
use shared_types::Verdict;

#[tokio::test(flavor = "multi_thread")]
async fn a_mongodb_dump_round_trips_every_document_and_index() {
    let server = support::mongo_server().await;
    let client = mongodb::Client::with_uri_str(server.url()).await.unwrap();
    let db = client.database("marketplace");
    let nfts: Vec<Document> = (0..300)
        .map(|i| doc! { "_id": i, "token_id": format!("0x{i:04x}"), "owner": format!("user-{}", i % 7), "tags": ["art", format!("t{i}")] })
        .collect();
    db.collection::<Document>("nfts").insert_many(nfts.clone()).await.unwrap();
    db.collection::<Document>("sessions")
        .insert_many((0..25).map(|i| doc! { "_id": i, "device": "fp" }))
        .await
        .unwrap();
    db.collection::<Document>("nfts")
        .create_index(mongodb::IndexModel::builder().keys(doc! { "owner": 1 }).build())
        .await
        .unwrap();

    // Uncompressed, so the local repository is a directory mongorestore reads.
    let dir = tempfile::tempdir().unwrap();
    let repo = support::local_repository(dir.path()).await;
    let settings = UploadSettings { compression: Compression::None, ..UploadSettings::default() };
    let manifest = mongo::backup(&repo, &server.url(), "marketplace", &settings).await.unwrap();
    let layout = dir.path().join("backups").join(&manifest.id).join("marketplace");
    for file in ["nfts.bson", "nfts.metadata.json", "sessions.bson", "sessions.metadata.json"] {
        assert!(layout.join(file).is_file(), "{file} missing from the mongodump layout");
    }
    assert_eq!(
        mongo::split_bson(&std::fs::read(layout.join("nfts.bson")).unwrap()).unwrap().len(),
        300
    );

    let report = mongo::restore(&repo, &manifest, &server.url(), Some("restored")).await.unwrap();
    assert_eq!(report.verdict(), Verdict::Pass, "{}", report.to_json_pretty());
    let mut back: Vec<Document> = Vec::new();
    let mut cursor =
        client.database("restored").collection::<Document>("nfts").find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        back.push(cursor.deserialize_current().unwrap());
    }
    back.sort_by_key(|d| d.get_i32("_id").unwrap());
    assert_eq!(back, nfts);
}

/// `verify --restore --mongo-url` restores a MongoDB backup into a scratch
/// database, passes when the counts match, fails when the dump lost
/// documents, and drops the scratch database either way.
#[tokio::test(flavor = "multi_thread")]
async fn verify_restores_a_mongodb_backup_into_a_scratch_database_and_drops_it() {
    let server = support::mongo_server().await;
    let client = mongodb::Client::with_uri_str(server.url()).await.unwrap();
    client
        .database("shop")
        .collection::<Document>("orders")
        .insert_many((0..40).map(|i| doc! { "_id": i, "total": i * 3 }))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let url = server.url();
    let out = support::agent(&[
        "backup",
        "mongo",
        "--repo",
        repo,
        "--mongo-url",
        &url,
        "--db",
        "shop",
        "--compression",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));

    let verify = || {
        support::agent(&[
            "verify",
            "--repo",
            repo,
            "--restore",
            "--mongo-url",
            &url,
            "--output",
            "json",
        ])
    };
    let out = verify();
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let report = shared_types::Report::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert!(
        report.checks.iter().any(|c| c.id.starts_with("restore/") && c.verdict == Verdict::Pass),
        "{}",
        report.to_json_pretty()
    );
    let names = client.list_database_names().await.unwrap();
    assert!(
        !names.iter().any(|n| n.starts_with("verify_")),
        "scratch database left behind: {names:?}"
    );

    // A dump that lost documents (and a manifest rewritten to match its
    // bytes): the objects check passes, the restore check catches it.
    let backups = dir.path().join("backups");
    let id = std::fs::read_dir(&backups).unwrap().next().unwrap().unwrap().file_name();
    let bson = backups.join(&id).join("shop/orders.bson");
    let docs = mongo::split_bson(&std::fs::read(&bson).unwrap()).unwrap();
    let kept: Vec<u8> = docs[..30].iter().flat_map(|d| d.as_bytes().to_vec()).collect();
    std::fs::write(&bson, &kept).unwrap();
    let manifest_path = backups.join(&id).join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    for object in manifest["objects"].as_array_mut().unwrap() {
        if object["key"].as_str().unwrap().ends_with("orders.bson") {
            use sha2::Digest;
            let sha = hex::encode(sha2::Sha256::digest(&kept));
            object["size"] = kept.len().into();
            object["raw_size"] = kept.len().into();
            object["sha256"] = sha.clone().into();
            object["raw_sha256"] = sha.into();
        }
    }
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", support::text(&out));
    assert!(support::text(&out).contains("30 restored"), "{}", support::text(&out));
    let names = client.list_database_names().await.unwrap();
    assert!(
        !names.iter().any(|n| n.starts_with("verify_")),
        "scratch database left behind: {names:?}"
    );
}

/// `restore mongo` into collections that hold documents needs --replace;
/// --dry-run counts what would be dropped and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn restoring_over_live_collections_needs_replace() {
    let server = support::mongo_server().await;
    let client = mongodb::Client::with_uri_str(server.url()).await.unwrap();
    let orders = client.database("shop").collection::<Document>("orders");
    orders.insert_many((0..12).map(|i| doc! { "_id": i })).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_str().unwrap();
    let url = server.url();
    let out =
        support::agent(&["backup", "mongo", "--repo", repo, "--mongo-url", &url, "--db", "shop"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    orders.delete_many(doc! { "_id": { "$in": [4, 5, 6, 7, 8, 9, 10, 11] } }).await.unwrap();
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 4);

    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "mongo", "--repo", repo, "--mongo-url", &url];
        args.extend_from_slice(extra);
        support::agent(&args)
    };
    let out = restore(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    assert!(support::text(&out).contains("shop.orders (4 rows now)"), "{}", support::text(&out));
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", support::text(&out));
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 4);
    let out = restore(&["--replace"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 12);
}
