//! The store's format version (architecture.md, "Storage operations"): data directories written
//! by format versions 1 and 2 (`tests/fixtures/store-v1`, `store-v2`, each by the last build of
//! its version) are migrated at open and answer, and digest, exactly as those builds recorded; a
//! new store gets the current version; a store of a newer format is refused by `serve` and
//! `digest`, naming both versions and what to do.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use stepview::store::format::FORMAT_VERSION;

const VERSION_KEY: &[u8] = b"format-version";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a store fixture (opening a store writes to it).
fn copy_of(name: &str, into: &Path) -> std::path::PathBuf {
    let data = into.join("data");
    std::fs::create_dir(&data).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
    }
    data
}

/// The store's version key, read with RocksDB itself.
fn stored_version(data: &Path) -> Option<u32> {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), data).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), data, &names, false)
        .unwrap();
    let value = db
        .get_cf(db.cf_handle("meta").unwrap(), VERSION_KEY)
        .unwrap()?;
    Some(u32::from_be_bytes(value.try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_store_is_migrated_and_answers_as_the_build_that_wrote_it() {
    migrated_answers_as_recorded("store-v1", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_store_is_migrated_and_answers_as_the_build_that_wrote_it() {
    migrated_answers_as_recorded("store-v2", Some(2)).await;
}

/// Opens a copy of the fixture `name` (whose version key is `version`): its answers and digest
/// are those recorded (both fixtures hold the same events, and their builds answered alike:
/// `tests/fixtures/README.md`), and the migration recorded the current version.
async fn migrated_answers_as_recorded(name: &str, version: Option<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_of(name, dir.path());
    assert_eq!(stored_version(&data), version, "as its build left it");
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("store-v1.json")).unwrap()).unwrap();

    let mut config = test_config(&data);
    // The fixture's events are from 2025: kept whatever today's date.
    config.store.retention_days = stepview::settings::Days(0);
    let svc = TestService::start(config).await;
    let auth = auth_header(APP, SECRET);
    let answers = recorded["answers"].as_array().unwrap();
    assert!(answers.len() >= 15);
    for ask in answers {
        let path = ask["path"].as_str().unwrap();
        let request = match ask["method"].as_str().unwrap() {
            "GET" => svc.client.get(format!(
                "{}{path}?{}",
                svc.base,
                ask["query"].as_str().unwrap()
            )),
            _ => svc
                .client
                .post(format!("{}{path}", svc.base))
                .json(&ask["body"]),
        };
        let resp = request
            .header("X-Bkapi-Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), ask["status"], "{ask}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(
            settled(answer),
            settled(ask["answer"].clone()),
            "{path}?{}",
            ask["query"]
        );
    }
    assert_eq!(
        svc.views.store.digest().unwrap(),
        recorded["digest"].as_str().unwrap()
    );
    svc.stop().await;
    assert_eq!(
        stored_version(&data),
        Some(FORMAT_VERSION),
        "the migration recorded the version it reached"
    );
    // The digest command reads the migrated store as it is.
    let out = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .arg("digest")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        recorded["digest"].as_str().unwrap()
    );
}

#[test]
fn a_new_store_gets_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = std::sync::Arc::new(stepview::telemetry::Telemetry::new());
    let opened = stepview::store::Store::open(dir.path(), &Default::default(), &telemetry);
    drop(opened.unwrap());
    assert_eq!(stored_version(dir.path()), Some(FORMAT_VERSION));
}

#[test]
fn a_store_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_of("store-v1", dir.path());
    {
        // As a later stepview would leave it.
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &data).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &data, &names).unwrap();
        let newer = FORMAT_VERSION + 1;
        db.put_cf(
            db.cf_handle("meta").unwrap(),
            VERSION_KEY,
            newer.to_be_bytes(),
        )
        .unwrap();
    }
    let newer = format!("format version {}", FORMAT_VERSION + 1);
    let knows = format!("up to {FORMAT_VERSION}");
    for args in [
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "off",
            "--data-dir",
        ],
        vec!["digest"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stepview"))
            .args(&args)
            .arg(&data)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&newer)
                && stderr.contains(&knows)
                && stderr.contains("stepview replay"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        stored_version(&data),
        Some(FORMAT_VERSION + 1),
        "left as it was"
    );
}
