//! The web client in a real browser: starts the server in-process on a free
//! port and runs `node tests/browser/chat.mjs <url> <screenshot.png>`
//! (Playwright's `playwright-core` driving Debian's `/usr/bin/chromium`).
//! The screenshot goes to a temporary folder; with `UPDATE_SCREENSHOT=1` it
//! replaces the README's `docs/screenshot.png` (a test run leaves the source
//! tree as it was).
//!
//! Needs node, chromium and `tests/browser/node_modules` (install them with
//! `scripts/browser-setup.sh`). When one is missing the test fails if the
//! `CI` environment variable is set, and otherwise returns early saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_core::{Engine, FileSettings};
use support::{StreamBot, TestServer};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// What is missing to run the browser test, if anything.
fn missing(root: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        missing.push("node".to_owned());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        missing.push(chromium);
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        missing.push("tests/browser/node_modules/playwright-core".to_owned());
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_in_a_real_browser() {
    let root = workspace_root();
    let missing = missing(&root);
    if !missing.is_empty() {
        let msg = format!(
            "browser test needs {}: run scripts/browser-setup.sh",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
        return;
    }

    // A slower bot, so that the page sees the reply grow; file sharing on.
    let vault = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .limits(support::limits())
        .bot(StreamBot {
            delay: Duration::from_millis(150),
        })
        .files(FileSettings::new(vault.path()))
        .build()
        .unwrap();
    let server = TestServer::start_with(engine, support::settings()).await;
    let url = format!("http://{}/", server.addr);
    let shots = tempfile::tempdir().unwrap();
    let screenshot = if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        std::fs::create_dir_all(root.join("docs")).unwrap();
        root.join("docs/screenshot.png")
    } else {
        shots.path().join("screenshot.png")
    };

    let child = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/chat.mjs"))
        .arg(&url)
        .arg(&screenshot)
        .current_dir(root.join("tests/browser"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("browser test timed out")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("browser steps ok: 17, failing: 0"),
        "{stdout}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    server.stop().await.unwrap();
}
