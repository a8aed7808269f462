//! Interoperability with `openssl s_client`: a handshake and a signup over
//! TLS 1.2 and 1.3, and refusal of TLS 1.0 and 1.1.
//!
//! Needs the `openssl` command (Debian package `openssl`). Without it the
//! tests fail when the environment variable `CI` is set, and otherwise
//! return early with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;

use chat_transport_tcp::TcpSettings;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Whether `openssl` can run; panics under CI when it cannot.
async fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the `openssl` command is missing (apt-get install -y openssl)"
        );
        eprintln!("skipping: the `openssl` command is missing (apt-get install -y openssl)");
    }
    ok
}

fn s_client(port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn s_client_completes_a_handshake_and_signs_up() {
    if !have_openssl().await {
        return;
    }
    let server = TestServer::start(TcpSettings::default()).await;
    for (version, user) in [("-tls1_3", "alice"), ("-tls1_2", "bob")] {
        let mut child = s_client(server.port, &["-quiet", version]).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let line = format!(
            "{{\"type\":\"signup\",\"id\":1,\"username\":\"{user}\",\"password\":\"correct horse\"}}\n"
        );
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let authed = within(async {
            loop {
                let Some(line) = lines.next_line().await.unwrap() else {
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
                    panic!("s_client {version} ended before `authed`; stderr: {err}");
                };
                let frame: serde_json::Value = serde_json::from_str(&line).unwrap();
                if frame["type"] == "authed" {
                    return frame;
                }
            }
        })
        .await;
        assert_eq!(authed["id"], 1);
        assert_eq!(authed["user"], user);
        child.kill().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn s_client_with_tls_1_0_or_1_1_is_refused() {
    if !have_openssl().await {
        return;
    }
    let server = TestServer::start(TcpSettings::default()).await;
    for version in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0 lets OpenSSL 3 offer the old versions at all, so the
        // refusal below comes from the server.
        let child = s_client(server.port, &[version, "-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let out = within(child.wait_with_output()).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{version} succeeded: {stdout}");
        assert!(
            stderr.contains("SSL alert number"),
            "{version}: expected a TLS alert received from the server, stderr: {stderr}"
        );
        assert!(
            !stdout.contains("\"hello\""),
            "{version}: a frame leaked: {stdout}"
        );
    }
    server.stop().await;
}
