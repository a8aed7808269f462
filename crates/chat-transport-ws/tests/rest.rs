//! The REST API: auth, rooms, messages, access rules and the JSON error
//! shape, over real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{http, http_raw, rest_signup, TestServer};

#[tokio::test]
async fn signup_login_session_and_tokens() {
    let server = TestServer::start(support::settings()).await;
    let a = server.addr;
    let token = rest_signup(a, "alice").await;

    let r = http(
        a,
        "POST",
        "/api/signup",
        None,
        Some(json!({"username": "alice", "password": "password123"})),
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "already_exists"));

    let r = http(
        a,
        "POST",
        "/api/login",
        None,
        Some(json!({"username": "alice", "password": "wrong-password"})),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "bad_credentials")
    );
    assert_eq!(r.headers["www-authenticate"], "Bearer");

    let r = http(
        a,
        "POST",
        "/api/login",
        None,
        Some(json!({"username": "Alice", "password": "password123"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["user"], "alice");
    assert!(v["expires_at"].as_u64().unwrap() > 0);
    let second = v["token"].as_str().unwrap().to_owned();
    assert_ne!(second, token);

    let r = http(
        a,
        "POST",
        "/api/tokens",
        None,
        Some(json!({"username": "alice", "password": "password123"})),
    )
    .await;
    assert_eq!(r.status, 201);

    let r = http(a, "GET", "/api/session", Some(&token), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["user"], "alice");

    // A bearer token buys a fresh one without the password.
    let r = http(a, "POST", "/api/session/refresh", None, None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthenticated")
    );
    let r = http(a, "POST", "/api/session/refresh", Some("bogus"), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_token"));
    let r = http(a, "POST", "/api/session/refresh", Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["user"], "alice");
    assert!(v["expires_at"].as_u64().unwrap() > 0);
    let fresh = v["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    let r = http(a, "GET", "/api/session", Some(&fresh), None).await;
    assert_eq!(r.json()["user"], "alice");
    let r = http(a, "GET", "/api/session/refresh", Some(&fresh), None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = http(a, "DELETE", "/api/session", Some(&fresh), None).await;
    assert_eq!(r.status, 204);

    // Logout revokes that token only.
    let r = http(a, "DELETE", "/api/session", Some(&token), None).await;
    assert_eq!(r.status, 204);
    let r = http(a, "GET", "/api/session", Some(&token), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_token"));
    let r = http(a, "GET", "/api/session", Some(&second), None).await;
    assert_eq!(r.status, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rooms_and_messages() {
    let server = TestServer::start(support::settings()).await;
    let a = server.addr;
    let alice = rest_signup(a, "alice").await;
    let bob = rest_signup(a, "bob").await;

    let r = http(
        a,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "lobby", "kind": "public", "topic": "hello"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["room"]["name"], "lobby");
    let r = http(a, "POST", "/api/rooms/lobby/join", Some(&bob), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["room"]["role"], "member");

    for i in 1..=5 {
        let r = http(
            a,
            "POST",
            "/api/rooms/lobby/messages",
            Some(&alice),
            Some(json!({"body": format!("m{i}"), "client_id": format!("c{i}")})),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["seq"], i);
        assert_eq!(r.json()["client_id"], format!("c{i}"));
    }
    // A retry with the same client_id is stored once.
    let r = http(
        a,
        "POST",
        "/api/rooms/lobby/messages",
        Some(&alice),
        Some(json!({"body": "m5", "client_id": "c5"})),
    )
    .await;
    assert_eq!(
        (
            r.status,
            r.json()["seq"].as_u64(),
            r.json()["duplicate"].as_bool()
        ),
        (200, Some(5), Some(true))
    );

    let r = http(
        a,
        "GET",
        "/api/rooms/lobby/messages?limit=2",
        Some(&bob),
        None,
    )
    .await;
    let v = r.json();
    let seqs: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    assert_eq!(v["has_more"], true);
    let r = http(
        a,
        "GET",
        "/api/rooms/lobby/messages?before=4&limit=10",
        Some(&bob),
        None,
    )
    .await;
    let seqs: Vec<u64> = r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let r = http(
        a,
        "GET",
        "/api/rooms/lobby/messages?after=3",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(r.json()["messages"][0]["body"], "m4");

    let r = http(a, "GET", "/api/rooms", Some(&bob), None).await;
    assert!(r.json()["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|room| room["name"] == "lobby" && room["last_seq"] == 5));
    // Read markers: bob has read nothing yet, then up to seq 4.
    let unread = |r: &support::HttpReply| {
        r.json()["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "lobby")
            .unwrap()["unread"]
            .as_u64()
    };
    let r = http(a, "GET", "/api/rooms", Some(&bob), None).await;
    assert_eq!(unread(&r), Some(5));
    let r = http(
        a,
        "POST",
        "/api/rooms/lobby/read",
        Some(&bob),
        Some(json!({"seq": 4})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = http(a, "GET", "/api/rooms", Some(&bob), None).await;
    assert_eq!(unread(&r), Some(1));
    let r = http(a, "GET", "/api/rooms/lobby/members", Some(&bob), None).await;
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 2);

    // Direct rooms: percent-encoded names work.
    let r = http(
        a,
        "POST",
        "/api/direct",
        Some(&alice),
        Some(json!({"user": "bob"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["room"]["name"], "dm:alice:bob");
    let r = http(
        a,
        "POST",
        "/api/rooms/dm%3Aalice%3Abob/messages",
        Some(&bob),
        Some(json!({"body": "psst"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn access_rules_and_json_errors() {
    let server = TestServer::start(support::settings()).await;
    let a = server.addr;
    let alice = rest_signup(a, "alice").await;
    let eve = rest_signup(a, "eve").await;
    http(
        a,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "secret", "kind": "private"})),
    )
    .await;
    http(
        a,
        "POST",
        "/api/rooms",
        Some(&alice),
        Some(json!({"room": "news", "kind": "announcement"})),
    )
    .await;

    // 401 without a token, and with a bad one or a malformed header.
    let r = http(a, "GET", "/api/rooms", None, None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthenticated")
    );
    let r = http(a, "GET", "/api/rooms", Some("not-a-token"), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "invalid_token"));

    // A private room does not exist for a non-member: 404, not 403.
    let r = http(a, "GET", "/api/rooms/secret/messages", Some(&eve), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = http(a, "POST", "/api/rooms/secret/join", Some(&eve), None).await;
    assert_eq!(r.status, 404);
    // Members of an announcement room may not post: 403.
    http(a, "POST", "/api/rooms/news/join", Some(&eve), None).await;
    let r = http(
        a,
        "POST",
        "/api/rooms/news/messages",
        Some(&eve),
        Some(json!({"body": "hi"})),
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    // Unknown rooms and paths: 404; wrong method: 405.
    let r = http(a, "GET", "/api/rooms/nowhere/messages", Some(&eve), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = http(a, "GET", "/api/nothing", Some(&eve), None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = http(a, "DELETE", "/api/rooms", Some(&eve), None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(r.headers["allow"], "GET, POST");
    // Bad input: malformed JSON, wrong query, empty message, oversize body.
    let r = http_raw(a, "POST", "/api/rooms", Some(&alice), "{oops".into()).await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_frame"));
    let r = http(
        a,
        "GET",
        "/api/rooms/news/messages?limit=lots",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid"));
    let r = http(
        a,
        "POST",
        "/api/rooms/news/messages",
        Some(&alice),
        Some(json!({"body": "  "})),
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid"));
    let big = json!({"body": "x".repeat(100 * 1024)});
    let r = http(
        a,
        "POST",
        "/api/rooms/news/messages",
        Some(&alice),
        Some(big),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "frame_too_large")
    );
    // The server kept serving throughout.
    let r = http(
        a,
        "POST",
        "/api/rooms/news/messages",
        Some(&alice),
        Some(json!({"body": "still fine"})),
    )
    .await;
    assert_eq!(r.status, 201);
    server.stop().await.unwrap();
}
