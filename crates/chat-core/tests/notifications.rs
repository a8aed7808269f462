//! Notifications: unread counts per room from server-side read markers, and
//! mention notifications to every session of the mentioned member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chat_core::{ClientFrame, RoomInfo, ServerFrame};
use support::Client;

async fn rooms(c: &mut Client) -> Vec<RoomInfo> {
    let ServerFrame::Rooms { rooms, .. } = c.call(ClientFrame::ListRooms).await else {
        panic!()
    };
    rooms
}

#[tokio::test]
async fn unread_counts_follow_read_markers() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("a", "public").await;
    alice.create("b", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("a").await;
    for i in 0..5 {
        alice.send("a", &format!("m{i}")).await;
    }
    alice.send("b", "elsewhere").await;
    let r = rooms(&mut bob).await;
    let a = r.iter().find(|r| r.name == "a").unwrap();
    assert_eq!((a.last_seq, a.last_read, a.unread), (5, 0, 5));
    // Not a member of b: no unread count for it.
    assert_eq!(r.iter().find(|r| r.name == "b").unwrap().unread, 0);

    bob.call(ClientFrame::MarkRead {
        room: "a".into(),
        seq: 3,
    })
    .await;
    // Marking back does not lose the mark; marking past the end is clamped.
    bob.call(ClientFrame::MarkRead {
        room: "a".into(),
        seq: 1,
    })
    .await;
    let a = rooms(&mut bob)
        .await
        .into_iter()
        .find(|r| r.name == "a")
        .unwrap();
    assert_eq!((a.last_read, a.unread), (3, 2));
    bob.call(ClientFrame::MarkRead {
        room: "a".into(),
        seq: 99,
    })
    .await;
    let a = rooms(&mut bob)
        .await
        .into_iter()
        .find(|r| r.name == "a")
        .unwrap();
    assert_eq!((a.last_read, a.unread), (5, 0));
    // The marker is the user's, seen from another session too.
    let mut bob2 = Client::connect(&e).await;
    bob2.call(ClientFrame::Login {
        username: "bob".into(),
        password: "password123".into(),
    })
    .await;
    let a = rooms(&mut bob2)
        .await
        .into_iter()
        .find(|r| r.name == "a")
        .unwrap();
    assert_eq!(a.unread, 0);
}

#[tokio::test]
async fn mentions_reach_every_session_of_a_member_only() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("team", "private").await;
    let mut bob = Client::signup(&e, "bob").await;
    let mut bob_phone = Client::connect(&e).await;
    bob_phone
        .call(ClientFrame::Login {
            username: "bob".into(),
            password: "password123".into(),
        })
        .await;
    let mut eve = Client::signup(&e, "eve").await;
    alice
        .call(ClientFrame::Invite {
            room: "team".into(),
            user: "bob".into(),
        })
        .await;

    // Neither of bob's sessions subscribed to the room; eve is no member.
    alice
        .send("team", "@bob @eve @alice can you review the plan?")
        .await;
    for c in [&mut bob, &mut bob_phone] {
        let mention = loop {
            if let ServerFrame::Mention {
                room,
                seq,
                from,
                excerpt,
            } = c.next().await
            {
                break (room, seq, from, excerpt);
            }
        };
        assert_eq!(mention.0, "team");
        assert_eq!((mention.1, mention.2.as_str()), (1, "alice"));
        assert!(mention.3.contains("review the plan"));
    }
    // Eve (not a member) and alice (the author) hear nothing.
    for c in [&mut eve, &mut alice] {
        c.call(ClientFrame::Ping).await;
        assert!(
            c.backlog
                .iter()
                .all(|f| !matches!(f, ServerFrame::Mention { .. })),
            "{:?}",
            c.backlog
        );
    }
}

#[tokio::test]
async fn invitees_hear_of_new_rooms_at_once() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    let mut bob = Client::signup(&e, "bob").await;
    alice.create("team", "private").await;
    alice
        .call(ClientFrame::Invite {
            room: "team".into(),
            user: "bob".into(),
        })
        .await;
    alice
        .call(ClientFrame::OpenDirect { user: "bob".into() })
        .await;
    let mut rooms = Vec::new();
    while rooms.len() < 2 {
        if let ServerFrame::MemberEvent { room, user, .. } = bob.next().await {
            assert_eq!(user, "bob");
            rooms.push(room);
        }
    }
    assert_eq!(rooms, ["team", "dm:alice:bob"]);
}

#[tokio::test]
async fn a_token_refresh_keeps_the_session() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    alice.subscribe("r", None).await;
    let ServerFrame::Authed { token, .. } = alice.call(ClientFrame::RefreshToken).await else {
        panic!()
    };
    // Still subscribed after the refresh.
    alice.send("r", "still here").await;
    assert_eq!(alice.next_message().await.body, "still here");
    // The new token works elsewhere.
    let mut other = Client::connect(&e).await;
    let r = other.call(ClientFrame::Auth { token }).await;
    assert!(matches!(r, ServerFrame::Authed { .. }), "{r:?}");
}

/// Typing events reach the room at most once a second per connection.
#[tokio::test]
async fn typing_events_are_throttled_to_one_a_second() {
    let e = support::engine();
    let mut alice = Client::signup(&e, "alice").await;
    alice.create("r", "public").await;
    let mut bob = Client::signup(&e, "bob").await;
    bob.join("r").await;
    bob.subscribe("r", None).await;
    let typing = || ClientFrame::Typing { room: "r".into() };
    for _ in 0..3 {
        assert!(matches!(alice.call(typing()).await, ServerFrame::Ok { .. }));
    }
    alice.send("r", "after typing").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    alice.call(typing()).await;
    alice.send("r", "typed again").await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match bob.next().await {
            ServerFrame::Typing { user, .. } => seen.push(format!("typing {user}")),
            ServerFrame::Message { message } => seen.push(message.body),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "typing alice",
            "after typing",
            "typing alice",
            "typed again"
        ]
    );
}
