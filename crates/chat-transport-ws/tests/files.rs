//! File sharing over HTTP and over WebSocket frames, on 127.0.0.1: round
//! trips byte for byte, limits, disguised types, path traversal, access
//! for non-members and interrupted uploads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use base64::Engine as _;
use chat_core::{ErrorCode, ServerFrame};
use serde_json::{json, Value};
use support::{
    eventually, files_engine, http, http_raw, png_bytes, raw_http, rest_signup, tmp_files,
    ws_connect, TestServer,
};

const MIB: u64 = 1024 * 1024;

/// A server with files in `dir/vault`, alice and bob members of the public
/// room `lobby`; returns their tokens.
async fn setup(dir: &Path, max: u64) -> (TestServer, String, String) {
    let server =
        TestServer::start_with(files_engine(&dir.join("vault"), max), support::settings()).await;
    let a = server.addr;
    let alice = rest_signup(a, "alice").await;
    let bob = rest_signup(a, "bob").await;
    let r = http(
        a,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "lobby"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http(a, "POST", "/api/rooms/lobby/join", Some(&bob), None).await;
    assert_eq!(r.status, 200);
    (server, alice, bob)
}

async fn upload(
    server: &TestServer,
    token: &str,
    room: &str,
    query: &str,
    bytes: &[u8],
) -> support::HttpReply {
    let path = format!("/api/rooms/{room}/files?{query}");
    http_raw(
        server.addr,
        "POST",
        &path,
        Some(token),
        bytes.to_vec().into(),
    )
    .await
}

/// The vault holds nothing but its empty temporary folder.
fn vault_is_empty(vault: &Path) {
    let entries: Vec<_> = std::fs::read_dir(vault)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("tmp")]);
    assert!(tmp_files(vault).is_empty());
}

fn header<'a>(r: &'a support::HttpReply, name: &str) -> &'a str {
    r.headers[name].to_str().unwrap()
}

#[tokio::test]
async fn http_upload_and_download_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (server, alice, bob) = setup(dir.path(), 10 * MIB).await;
    let a = server.addr;
    // Bob watches the room live.
    let mut ws = ws_connect(a).await;
    ws.call(json!({"type": "auth", "token": bob})).await;
    ws.call(json!({"type": "subscribe", "rooms": [{"room": "lobby", "last_seq": 0}]}))
        .await;

    // Several times the REST body limit: the upload streams.
    let bytes = png_bytes(300 * 1024, 7);
    let r = upload(
        &server,
        &alice,
        "lobby",
        "name=x.png&body=a+picture&client_id=f1",
        &bytes,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["room"].as_str(), v["seq"].as_u64()),
        (Some("lobby"), Some(1))
    );
    assert_eq!(v["client_id"], "f1");
    let file = v["file"].clone();
    assert_eq!(file["name"], "x.png");
    assert_eq!(file["mime"], "image/png");
    assert_eq!(file["size"].as_u64(), Some(bytes.len() as u64));
    let id = file["id"].as_str().unwrap().to_owned();

    let got = ws
        .next_matching(|f| matches!(f, ServerFrame::Message { .. }))
        .await;
    let ServerFrame::Message { message } = got else {
        unreachable!()
    };
    assert_eq!(message.body, "a picture");
    assert_eq!(message.file.as_ref().unwrap().id, id);

    let r = http(a, "GET", &format!("/api/files/{id}"), Some(&bob), None).await;
    assert_eq!(r.status, 200);
    assert!(r.body == bytes[..], "downloaded bytes differ");
    assert_eq!(header(&r, "content-type"), "image/png");
    assert_eq!(header(&r, "content-length"), bytes.len().to_string());
    assert_eq!(
        header(&r, "content-disposition"),
        "inline; filename=\"x.png\"; filename*=UTF-8''x.png"
    );
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let etag = header(&r, "etag").to_owned();

    // A cached copy is revalidated, not sent again.
    let req = format!(
        "GET /api/files/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bob}\r\n\
         If-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = raw_http(a, req.as_bytes()).await;
    assert_eq!((status, body.len()), (304, 0));

    let r = http(a, "GET", "/api/rooms/lobby/files", Some(&bob), None).await;
    assert_eq!(r.status, 200);
    let files = r.json()["files"].clone();
    assert_eq!(files.as_array().unwrap().len(), 1);
    assert_eq!(files[0]["file"], file);
    assert_eq!(files[0]["uploader"], "alice");

    let r = http(a, "GET", "/api/rooms/lobby/messages", Some(&bob), None).await;
    assert_eq!(r.json()["messages"][0]["file"], file);
    let r = http(a, "GET", "/api/files", Some(&bob), None).await;
    let v = r.json();
    assert_eq!(
        (v["enabled"].as_bool(), v["max_file_bytes"].as_u64()),
        (Some(true), Some(10 * MIB))
    );
    assert!(v["extensions"].as_array().unwrap().contains(&json!("png")));
    assert!(tmp_files(&dir.path().join("vault")).is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_upload_and_download_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (server, alice, bob) = setup(dir.path(), 10 * MIB).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = png_bytes(200 * 1024 + 123, 11);

    let mut ws = ws_connect(server.addr).await;
    ws.call(json!({"type": "auth", "token": alice})).await;
    let r = ws
        .call(
            json!({"type": "upload_start", "room": "lobby", "name": "y.png", "size": bytes.len()}),
        )
        .await;
    let ServerFrame::UploadReady {
        upload,
        chunk_bytes,
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    for chunk in bytes.chunks(chunk_bytes) {
        let r = ws
            .call(json!({"type": "upload_chunk", "upload": upload, "data": b64.encode(chunk)}))
            .await;
        assert!(matches!(r, ServerFrame::Ok { .. }), "{r:?}");
    }
    let r = ws
        .call(json!({"type": "upload_finish", "upload": upload, "body": "over frames"}))
        .await;
    assert!(matches!(r, ServerFrame::Ack { seq: 1, .. }), "{r:?}");

    let mut bob_ws = ws_connect(server.addr).await;
    bob_ws.call(json!({"type": "auth", "token": bob})).await;
    let r = bob_ws
        .call(json!({"type": "list_files", "room": "lobby"}))
        .await;
    let ServerFrame::Files { files, .. } = r else {
        panic!("{r:?}")
    };
    let id = files[0].file.id.clone();
    let mut got = Vec::new();
    loop {
        let r = bob_ws
            .call(json!({"type": "download", "file": id, "offset": got.len()}))
            .await;
        let ServerFrame::FileChunk {
            offset,
            data,
            eof,
            file,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!((offset, file.name.as_str()), (got.len() as u64, "y.png"));
        got.extend(b64.decode(data).unwrap());
        if eof {
            break;
        }
    }
    assert!(got == bytes, "bytes downloaded over frames differ");
    // The same file over HTTP.
    let r = http(
        server.addr,
        "GET",
        &format!("/api/files/{id}"),
        Some(&bob),
        None,
    )
    .await;
    assert!(r.status == 200 && r.body == bytes[..]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn files_over_the_limit_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let (server, alice, _) = setup(dir.path(), 100_000).await;
    // Headers only: the answer comes without a byte of the body.
    let req = format!(
        "POST /api/rooms/lobby/files?name=big.png HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {alice}\r\nContent-Length: 100001\r\n\r\n"
    );
    let (status, _, body) = raw_http(server.addr, req.as_bytes()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("message_too_large"))
    );
    // With the body sent along, the same.
    let r = upload(
        &server,
        &alice,
        "lobby",
        "name=big.png",
        &png_bytes(150_000, 3),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "message_too_large")
    );
    // Exactly the limit is fine.
    let r = upload(
        &server,
        &alice,
        "lobby",
        "name=ok.png",
        &png_bytes(100_000, 3),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = http(
        server.addr,
        "GET",
        "/api/rooms/lobby/files",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.json()["files"].as_array().unwrap().len(), 1);
    assert!(tmp_files(&vault).is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn disguised_and_disallowed_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let (server, alice, _) = setup(dir.path(), 10 * MIB).await;
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.resize(4096, 0x90);
    let r = upload(&server, &alice, "lobby", "name=cat.png", &elf).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid"));
    let r = upload(&server, &alice, "lobby", "name=cat.exe", &elf).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid"));
    // A PNG named as a PDF is refused too.
    let r = upload(
        &server,
        &alice,
        "lobby",
        "name=doc.pdf",
        &png_bytes(2000, 1),
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid"));
    // Missing name, missing length.
    let r = upload(&server, &alice, "lobby", "body=hi", &png_bytes(2000, 1)).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid"));
    let req = format!(
        "POST /api/rooms/lobby/files?name=a.png HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {alice}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let (status, _, body) = raw_http(server.addr, req.as_bytes()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (411, Some("length_required"))
    );

    vault_is_empty(&vault);
    let r = http(
        server.addr,
        "GET",
        "/api/rooms/lobby/messages",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.json()["messages"], json!([]));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn path_traversal_names_lose_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let (server, alice, _) = setup(dir.path(), 10 * MIB).await;
    let query = "name=..%2F..%2Fetc%2Fpasswd.txt";
    let r = upload(
        &server,
        &alice,
        "lobby",
        query,
        b"root:x:0:0:root:/root:/bin/sh\n",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let file = r.json()["file"].clone();
    assert_eq!(
        (file["name"].as_str(), file["mime"].as_str()),
        (Some("passwd.txt"), Some("text/plain"))
    );
    // Nothing outside the vault; inside it, only content-hash paths.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("vault")]);
    for entry in walk(&vault) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name == "tmp" || name.bytes().all(|b| b.is_ascii_hexdigit()),
            "unexpected path in the vault: {entry:?}"
        );
    }
    let id = file["id"].as_str().unwrap();
    let r = http(
        server.addr,
        "GET",
        &format!("/api/files/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        header(&r, "content-disposition"),
        "attachment; filename=\"passwd.txt\"; filename*=UTF-8''passwd.txt"
    );
    server.stop().await.unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test]
async fn non_members_reach_no_private_file_by_any_route() {
    let dir = tempfile::tempdir().unwrap();
    let (server, alice, _) = setup(dir.path(), 10 * MIB).await;
    let a = server.addr;
    let eve = rest_signup(a, "eve").await;
    let r = http(
        a,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "secret", "kind": "private"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = upload(
        &server,
        &alice,
        "secret",
        "name=plan.png",
        &png_bytes(5000, 9),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["file"]["id"].as_str().unwrap().to_owned();

    let r = http(a, "GET", "/api/rooms/secret/files", Some(&eve), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let real = http(a, "GET", &format!("/api/files/{id}"), Some(&eve), None).await;
    assert_eq!(
        (real.status, real.error_code().as_str()),
        (404, "not_found")
    );
    let guessed = http(
        a,
        "GET",
        &format!("/api/files/{}", "0123456789abcdef".repeat(2)),
        Some(&eve),
        None,
    )
    .await;
    assert_eq!(guessed.status, 404);
    assert_eq!(
        real.body, guessed.body,
        "a real id must look like a guessed one"
    );
    let r = upload(&server, &eve, "secret", "name=x.png", &png_bytes(100, 2)).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = http(a, "GET", &format!("/api/files/{id}"), None, None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthenticated")
    );

    let mut ws = ws_connect(a).await;
    ws.call(json!({"type": "auth", "token": eve})).await;
    for req in [
        json!({"type": "download", "file": id}),
        json!({"type": "list_files", "room": "secret"}),
        json!({"type": "upload_start", "room": "secret", "name": "x.png", "size": 10}),
    ] {
        let r = ws.call(req.clone()).await;
        assert!(
            matches!(
                r,
                ServerFrame::Error {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{req}: {r:?}"
        );
    }
    // Alice, a member, still gets it.
    let r = http(a, "GET", &format!("/api/files/{id}"), Some(&alice), None).await;
    assert_eq!(r.status, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_interrupted_upload_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let (server, alice, _) = setup(dir.path(), 10 * MIB).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/rooms/lobby/files?name=half.png HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {alice}\r\nContent-Length: 100000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&png_bytes(50_000, 5)).await.unwrap();
    // The upload has begun: its temporary file exists.
    eventually("the upload starts", || tmp_files(&vault).len() == 1).await;
    drop(tcp);
    eventually("the partial file is deleted", || {
        tmp_files(&vault).is_empty()
    })
    .await;
    vault_is_empty(&vault);
    let r = http(
        server.addr,
        "GET",
        "/api/rooms/lobby/files",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.json()["files"], json!([]));
    let r = http(
        server.addr,
        "GET",
        "/api/rooms/lobby/messages",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(r.json()["messages"], json!([]));
    let r = http(server.addr, "GET", "/metrics", None, None).await;
    assert!(
        r.text().contains("chat_http_uploads_failed_total 1"),
        "{}",
        r.text()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_upload_times_out() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let settings = support::settings().upload_read_timeout(std::time::Duration::from_millis(200));
    let server = TestServer::start_with(files_engine(&vault, MIB), settings).await;
    let alice = rest_signup(server.addr, "alice").await;
    http(
        server.addr,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "lobby"})),
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/rooms/lobby/files?name=slow.png HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {alice}\r\nContent-Length: 1000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&png_bytes(600, 5)).await.unwrap();
    let (status, _, body) = support::read_response(&mut tcp).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (408, Some("idle")));
    vault_is_empty(&vault);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_quota_is_enforced_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let engine = chat_core::Engine::builder()
        .limits(support::limits())
        .files(chat_core::FileSettings::new(&vault).user_quota_bytes(10_000))
        .build()
        .unwrap();
    let server = TestServer::start_with(engine, support::settings()).await;
    let alice = rest_signup(server.addr, "alice").await;
    http(
        server.addr,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "lobby"})),
    )
    .await;
    let r = upload(&server, &alice, "lobby", "name=a.png", &png_bytes(6000, 1)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = upload(&server, &alice, "lobby", "name=b.png", &png_bytes(6000, 2)).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    let r = upload(&server, &alice, "lobby", "name=c.png", &png_bytes(4000, 3)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(tmp_files(&vault).is_empty());
    server.stop().await.unwrap();
}
