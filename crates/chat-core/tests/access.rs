//! Invariant 5: access is decided in the core. A non-member cannot see,
//! read, join, post to, or list a private room or another pair's direct
//! room; a non-admin cannot manage members.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chat_core::{ClientFrame, ErrorCode, Role, ServerFrame};
use support::{engine, error_code, Client};

#[tokio::test]
async fn non_members_cannot_reach_a_private_room() {
    let e = engine();
    let mut alice = Client::signup(&e, "alice").await;
    let mut eve = Client::signup(&e, "eve").await;
    alice.create("secret", "private").await;
    alice.send("secret", "the plan").await;

    // Every way in says not_found: the room's existence does not leak.
    let attempts = [
        ClientFrame::Join {
            room: "secret".into(),
        },
        ClientFrame::History {
            room: "secret".into(),
            before: None,
            after: None,
            limit: None,
        },
        ClientFrame::Members {
            room: "secret".into(),
        },
        ClientFrame::Send {
            room: "secret".into(),
            body: "hi".into(),
            client_id: None,
        },
        ClientFrame::Typing {
            room: "secret".into(),
        },
        ClientFrame::Invite {
            room: "secret".into(),
            user: "eve".into(),
        },
        ClientFrame::Leave {
            room: "secret".into(),
        },
    ];
    for frame in attempts {
        let r = eve.call(frame.clone()).await;
        assert_eq!(
            error_code(&r),
            Some(ErrorCode::NotFound),
            "{frame:?} -> {r:?}"
        );
    }
    let r = eve.subscribe("secret", Some(0)).await;
    assert_eq!(error_code(&r), Some(ErrorCode::NotFound));
    let ServerFrame::Rooms { rooms, .. } = eve.call(ClientFrame::ListRooms).await else {
        panic!()
    };
    assert!(rooms.iter().all(|r| r.name != "secret"));

    // Once invited, eve can read it.
    alice
        .call(ClientFrame::Invite {
            room: "secret".into(),
            user: "eve".into(),
        })
        .await;
    let r = eve
        .call(ClientFrame::History {
            room: "secret".into(),
            before: None,
            after: None,
            limit: None,
        })
        .await;
    let ServerFrame::History { messages, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(messages[0].body, "the plan");
}

#[tokio::test]
async fn direct_rooms_are_closed_to_third_parties() {
    let e = engine();
    let mut alice = Client::signup(&e, "alice").await;
    let mut bob = Client::signup(&e, "bob").await;
    let mut eve = Client::signup(&e, "eve").await;
    let ServerFrame::Room { room, .. } = alice
        .call(ClientFrame::OpenDirect { user: "bob".into() })
        .await
    else {
        panic!()
    };
    assert_eq!(room.kind, "direct");
    alice.send(&room.name, "just us").await;
    // Bob opens the same room from his side.
    let ServerFrame::Room { room: bobs, .. } = bob
        .call(ClientFrame::OpenDirect {
            user: "alice".into(),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(bobs.name, room.name);
    assert_eq!(bobs.last_seq, 1);

    for frame in [
        ClientFrame::Join {
            room: room.name.clone(),
        },
        ClientFrame::History {
            room: room.name.clone(),
            before: None,
            after: None,
            limit: None,
        },
        ClientFrame::Send {
            room: room.name.clone(),
            body: "me too".into(),
            client_id: None,
        },
    ] {
        let r = eve.call(frame).await;
        assert_eq!(error_code(&r), Some(ErrorCode::NotFound), "{r:?}");
    }
    // Nobody can invite into a direct room, not even its members.
    let r = alice
        .call(ClientFrame::Invite {
            room: room.name.clone(),
            user: "eve".into(),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::Forbidden));
}

#[tokio::test]
async fn only_admins_manage_members() {
    let e = engine();
    let mut alice = Client::signup(&e, "alice").await;
    let mut bob = Client::signup(&e, "bob").await;
    let _carol = Client::signup(&e, "carol").await;
    alice.create("team", "private").await;
    alice
        .call(ClientFrame::Invite {
            room: "team".into(),
            user: "bob".into(),
        })
        .await;
    for frame in [
        ClientFrame::Invite {
            room: "team".into(),
            user: "carol".into(),
        },
        ClientFrame::Remove {
            room: "team".into(),
            user: "alice".into(),
        },
        ClientFrame::SetRole {
            room: "team".into(),
            user: "bob".into(),
            role: Role::Admin,
        },
    ] {
        let r = bob.call(frame).await;
        assert_eq!(error_code(&r), Some(ErrorCode::Forbidden), "{r:?}");
    }
    // Promoted, bob can manage.
    alice
        .call(ClientFrame::SetRole {
            room: "team".into(),
            user: "bob".into(),
            role: Role::Admin,
        })
        .await;
    let r = bob
        .call(ClientFrame::Invite {
            room: "team".into(),
            user: "carol".into(),
        })
        .await;
    assert!(matches!(r, ServerFrame::Ok { .. }), "{r:?}");
}

#[tokio::test]
async fn a_removed_member_stops_receiving_at_once() {
    let e = engine();
    let mut alice = Client::signup(&e, "alice").await;
    let mut bob = Client::signup(&e, "bob").await;
    alice.create("team", "private").await;
    alice
        .call(ClientFrame::Invite {
            room: "team".into(),
            user: "bob".into(),
        })
        .await;
    assert!(matches!(
        bob.subscribe("team", Some(0)).await,
        ServerFrame::Subscribed { .. }
    ));
    alice.send("team", "before").await;
    assert_eq!(bob.next_message().await.body, "before");
    alice
        .call(ClientFrame::Remove {
            room: "team".into(),
            user: "bob".into(),
        })
        .await;
    alice.send("team", "after").await;
    // Bob sees his removal, and nothing after it.
    loop {
        match bob.next().await {
            ServerFrame::MemberEvent { user, .. } if user == "bob" => break,
            ServerFrame::Message { message } => panic!("leaked {message:?}"),
            _ => {}
        }
    }
    let r = bob.call(ClientFrame::Ping).await;
    assert!(matches!(r, ServerFrame::Pong { .. }));
    assert!(
        bob.backlog
            .iter()
            .all(|f| !matches!(f, ServerFrame::Message { .. })),
        "{:?}",
        bob.backlog
    );
}

#[tokio::test]
async fn requests_need_a_login() {
    let e = engine();
    let mut anon = Client::connect(&e).await;
    let r = anon.send("lobby", "hi").await;
    assert_eq!(error_code(&r), Some(ErrorCode::Unauthenticated));
}

#[tokio::test]
async fn credentials_and_tokens() {
    let e = engine();
    let mut alice = Client::signup(&e, "Alice").await;
    let mut other = Client::connect(&e).await;
    let r = other
        .call(ClientFrame::Login {
            username: "alice".into(),
            password: "wrong-password".into(),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::BadCredentials));
    let r = other
        .call(ClientFrame::Login {
            username: "nobody".into(),
            password: "password123".into(),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::BadCredentials));
    let r = other
        .call(ClientFrame::Signup {
            username: "ALICE".into(),
            password: "password123".into(),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::AlreadyExists));
    let ServerFrame::Authed { token, user, .. } = other
        .call(ClientFrame::Login {
            username: "alice".into(),
            password: "password123".into(),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(user, "alice");
    // The token works on another connection, and not after logout.
    let mut third = Client::connect(&e).await;
    assert!(matches!(
        third
            .call(ClientFrame::Auth {
                token: token.clone()
            })
            .await,
        ServerFrame::Authed { .. }
    ));
    other.call(ClientFrame::Logout).await;
    let mut fourth = Client::connect(&e).await;
    let r = fourth.call(ClientFrame::Auth { token }).await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidToken));
    let r = fourth
        .call(ClientFrame::Auth {
            token: "garbage".into(),
        })
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidToken));
    drop(alice.call(ClientFrame::Ping).await);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    // A zero lifetime: the token is expired as soon as it is issued.
    let e = chat_core::Engine::builder()
        .limits(support::limits().token_ttl(std::time::Duration::ZERO))
        .build()
        .unwrap();
    let mut a = Client::connect(&e).await;
    let ServerFrame::Authed { token, .. } = a
        .call(ClientFrame::Signup {
            username: "a".into(),
            password: "password123".into(),
        })
        .await
    else {
        panic!()
    };
    let mut b = Client::connect(&e).await;
    let r = b.call(ClientFrame::Auth { token }).await;
    assert_eq!(error_code(&r), Some(ErrorCode::TokenExpired));
}

#[tokio::test]
async fn rest_calls_follow_the_same_rules() {
    let e = engine();
    let ServerFrame::Authed { token: alice, .. } = e
        .call(
            None,
            ClientFrame::Signup {
                username: "alice".into(),
                password: "password123".into(),
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let ServerFrame::Authed { token: eve, .. } = e
        .call(
            None,
            ClientFrame::Signup {
                username: "eve".into(),
                password: "password123".into(),
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    e.call(
        Some(&alice),
        ClientFrame::CreateRoom {
            room: "secret".into(),
            kind: "private".into(),
            topic: String::new(),
        },
    )
    .await
    .unwrap();
    let ack = e
        .call(
            Some(&alice),
            ClientFrame::Send {
                room: "secret".into(),
                body: "hi".into(),
                client_id: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(ack, ServerFrame::Ack { seq: 1, .. }), "{ack:?}");
    let err = e
        .call(
            Some(&eve),
            ClientFrame::History {
                room: "secret".into(),
                before: None,
                after: None,
                limit: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let err = e.call(None, ClientFrame::ListRooms).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    let err = e
        .call(Some("bogus"), ClientFrame::ListRooms)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidToken);
}
