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
