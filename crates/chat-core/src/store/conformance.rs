//! The conformance suite every [`Store`] passes.
#![allow(clippy::unwrap_used)]
//!
//! A store crate runs it with one line in a test module:
//!
//! ```text
//! chat_core::store_conformance_tests!(my_store::open_temporary());
//! ```
//!
//! The macro expands to one `#[tokio::test]` per check, each with a fresh
//! store from the expression, so a failure names the broken promise.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::StoreError;
use crate::protocol::{FileRef, MessageKind, Role};
use crate::store::{
    FileRecord, HistoryQuery, NewMessage, RoomRecord, Store, TokenRecord, UserRecord,
};

/// Expands to one test per conformance check, each on a fresh store built by
/// `$make` (an expression evaluating to a type implementing `Store`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make;
            users_are_unique, tokens_round_trip, rooms_are_unique_and_keep_members,
            membership_changes, rooms_are_listed_by_kind_and_membership,
            seq_is_gap_free_per_room, concurrent_appends_are_gap_free,
            client_id_makes_appends_idempotent, history_pages_forward_and_backward,
            seq_at_finds_time, unknown_room_is_not_found, files_round_trip,
            messages_keep_their_file, read_markers_only_move_forward);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ::std::sync::Arc::new($make);
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}

fn room(name: &str, kind: &str) -> RoomRecord {
    RoomRecord {
        name: name.to_owned(),
        kind: kind.to_owned(),
        topic: format!("about {name}"),
        created_by: "alice".to_owned(),
        created_at: 1_000,
    }
}

fn msg(room: &str, sender: &str, body: &str, client_id: Option<&str>, ts: u64) -> NewMessage {
    NewMessage {
        room: room.to_owned(),
        sender: sender.to_owned(),
        body: body.to_owned(),
        kind: MessageKind::User,
        client_id: client_id.map(str::to_owned),
        ts,
        file: None,
    }
}

/// A taken user name is refused; users read back as written.
pub async fn users_are_unique(s: Arc<dyn Store>) {
    let u = UserRecord {
        name: "alice".into(),
        password_hash: "$argon2id$x".into(),
        created_at: 5,
    };
    s.create_user(u.clone()).await.unwrap();
    assert!(matches!(
        s.create_user(u.clone()).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.user("alice").await.unwrap(), Some(u));
    assert_eq!(s.user("bob").await.unwrap(), None);
}

/// Tokens are found by hash and gone after deletion.
pub async fn tokens_round_trip(s: Arc<dyn Store>) {
    let t = TokenRecord {
        token_hash: "ab12".into(),
        user: "alice".into(),
        expires_at: 99,
    };
    s.put_token(t.clone()).await.unwrap();
    assert_eq!(s.token("ab12").await.unwrap(), Some(t));
    s.delete_token("ab12").await.unwrap();
    assert_eq!(s.token("ab12").await.unwrap(), None);
    s.delete_token("ab12").await.unwrap();
}

/// A taken room name is refused; the first members are stored with the room.
pub async fn rooms_are_unique_and_keep_members(s: Arc<dyn Store>) {
    let r = room("lobby", "public");
    s.create_room(r.clone(), &[("alice".into(), Role::Admin)])
        .await
        .unwrap();
    assert!(matches!(
        s.create_room(r.clone(), &[]).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(s.room("lobby").await.unwrap(), Some(r));
    assert_eq!(s.room("nope").await.unwrap(), None);
    assert_eq!(
        s.member_role("lobby", "alice").await.unwrap(),
        Some(Role::Admin)
    );
}

/// Members are added, re-roled and removed, and each change is seen by the
/// next read (a store that caches roles must not answer from before it).
pub async fn membership_changes(s: Arc<dyn Store>) {
    assert_eq!(s.member_role("r", "alice").await.unwrap(), None);
    s.create_room(room("r", "private"), &[("alice".into(), Role::Admin)])
        .await
        .unwrap();
    assert_eq!(
        s.member_role("r", "alice").await.unwrap(),
        Some(Role::Admin)
    );
    assert_eq!(s.member_role("r", "bob").await.unwrap(), None);
    s.set_member("r", "bob", Role::Member).await.unwrap();
    assert_eq!(s.member_role("r", "bob").await.unwrap(), Some(Role::Member));
    s.set_member("r", "bob", Role::Admin).await.unwrap();
    assert_eq!(s.member_role("r", "bob").await.unwrap(), Some(Role::Admin));
    let mut members = s.members("r").await.unwrap();
    members.sort();
    assert_eq!(
        members,
        vec![("alice".into(), Role::Admin), ("bob".into(), Role::Admin)]
    );
    assert!(s.remove_member("r", "bob").await.unwrap());
    assert!(!s.remove_member("r", "bob").await.unwrap());
    assert_eq!(s.member_role("r", "bob").await.unwrap(), None);
    s.set_member("r", "bob", Role::Member).await.unwrap();
    assert_eq!(s.member_role("r", "bob").await.unwrap(), Some(Role::Member));
}

/// Rooms are listed by kind, and a user's rooms by membership.
pub async fn rooms_are_listed_by_kind_and_membership(s: Arc<dyn Store>) {
    for (name, kind) in [("a", "public"), ("b", "private"), ("c", "public")] {
        s.create_room(room(name, kind), &[("alice".into(), Role::Admin)])
            .await
            .unwrap();
    }
    s.set_member("b", "bob", Role::Member).await.unwrap();
    let names = |v: Vec<RoomRecord>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.rooms_of_kinds(&["public".into()], 10).await.unwrap()),
        vec!["a", "c"]
    );
    assert_eq!(
        s.rooms_of_kinds(&["public".into()], 1).await.unwrap().len(),
        1
    );
    let bobs = s.memberships("bob").await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].0.name, "b");
    assert_eq!(bobs[0].1, Role::Member);
    assert_eq!(s.memberships("alice").await.unwrap().len(), 3);
}

/// `seq` starts at 1 and grows by one, independently per room.
pub async fn seq_is_gap_free_per_room(s: Arc<dyn Store>) {
    s.create_room(room("x", "public"), &[]).await.unwrap();
    s.create_room(room("y", "public"), &[]).await.unwrap();
    assert_eq!(s.last_seq("x").await.unwrap(), 0);
    for i in 1..=5u64 {
        let a = s.append(msg("x", "alice", "hi", None, i)).await.unwrap();
        assert_eq!(a.message.seq, i);
        assert!(!a.duplicate);
    }
    let y = s.append(msg("y", "bob", "yo", None, 1)).await.unwrap();
    assert_eq!(y.message.seq, 1);
    assert_eq!(s.last_seq("x").await.unwrap(), 5);
    assert_eq!(s.last_seq("y").await.unwrap(), 1);
}

/// Many concurrent appends to one room get distinct, gap-free seqs.
pub async fn concurrent_appends_are_gap_free(s: Arc<dyn Store>) {
    s.create_room(room("busy", "public"), &[]).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let a = s
                    .append(msg("busy", &format!("w{w}"), &format!("{i}"), None, 1))
                    .await
                    .unwrap();
                seqs.push(a.message.seq);
            }
            seqs
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(all.insert(seq), "seq {seq} assigned twice");
        }
    }
    assert_eq!(all, (1..=400).collect::<HashSet<u64>>());
    let page = s
        .history("busy", HistoryQuery::after(0, 1000))
        .await
        .unwrap();
    assert_eq!(page.len(), 400);
    assert!(page.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

/// The same (room, sender, client_id) stores once; another sender's equal
/// client id is a different message and cannot overwrite the first.
pub async fn client_id_makes_appends_idempotent(s: Arc<dyn Store>) {
    s.create_room(room("r", "public"), &[]).await.unwrap();
    let a = s
        .append(msg("r", "alice", "one", Some("c1"), 1))
        .await
        .unwrap();
    let again = s
        .append(msg("r", "alice", "changed", Some("c1"), 2))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, a.message);
    let bob = s
        .append(msg("r", "bob", "mine", Some("c1"), 3))
        .await
        .unwrap();
    assert!(!bob.duplicate);
    assert_eq!(bob.message.seq, 2);
    let all = s.history("r", HistoryQuery::latest(10)).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["one", "mine"]
    );
    assert_eq!(all[0].client_id.as_deref(), Some("c1"));
}

/// History pages forward (`after`) and backward (`before`), ascending.
pub async fn history_pages_forward_and_backward(s: Arc<dyn Store>) {
    s.create_room(room("h", "public"), &[]).await.unwrap();
    for i in 1..=20u64 {
        s.append(msg("h", "alice", &format!("m{i}"), None, i * 10))
            .await
            .unwrap();
    }
    let seqs = |v: Vec<crate::Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(s.history("h", HistoryQuery::latest(3)).await.unwrap()),
        [18, 19, 20]
    );
    assert_eq!(
        seqs(s.history("h", HistoryQuery::before(5, 10)).await.unwrap()),
        [1, 2, 3, 4]
    );
    assert_eq!(
        seqs(s.history("h", HistoryQuery::before(18, 2)).await.unwrap()),
        [16, 17]
    );
    assert_eq!(
        seqs(s.history("h", HistoryQuery::after(17, 10)).await.unwrap()),
        [18, 19, 20]
    );
    assert_eq!(
        seqs(s.history("h", HistoryQuery::after(2, 2)).await.unwrap()),
        [3, 4]
    );
    let between = HistoryQuery {
        after: Some(5),
        before: Some(9),
        limit: 10,
    };
    assert_eq!(seqs(s.history("h", between).await.unwrap()), [6, 7, 8]);
    assert!(s
        .history("h", HistoryQuery::after(20, 5))
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .history("h", HistoryQuery::latest(0))
        .await
        .unwrap()
        .is_empty());
    let page = s.history("h", HistoryQuery::latest(1)).await.unwrap();
    assert_eq!(page[0].body, "m20");
    assert_eq!(page[0].ts, 200);
    assert_eq!(page[0].sender, "alice");
    assert_eq!(page[0].room, "h");
}

/// `seq_at` finds the first message at or after a time.
pub async fn seq_at_finds_time(s: Arc<dyn Store>) {
    s.create_room(room("t", "public"), &[]).await.unwrap();
    assert_eq!(s.seq_at("t", 0).await.unwrap(), 1);
    for ts in [100u64, 200, 200, 300] {
        s.append(msg("t", "a", "x", None, ts)).await.unwrap();
    }
    assert_eq!(s.seq_at("t", 0).await.unwrap(), 1);
    assert_eq!(s.seq_at("t", 150).await.unwrap(), 2);
    assert_eq!(s.seq_at("t", 200).await.unwrap(), 2);
    assert_eq!(s.seq_at("t", 201).await.unwrap(), 4);
    assert_eq!(s.seq_at("t", 301).await.unwrap(), 5);
}

/// Operations on a room that does not exist say `NotFound`.
pub async fn unknown_room_is_not_found(s: Arc<dyn Store>) {
    assert!(matches!(
        s.append(msg("ghost", "a", "x", None, 1)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.set_member("ghost", "a", Role::Member).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.member_role("ghost", "a").await.unwrap(), None);
}

fn file(id: &str, room: &str, uploader: &str, size: u64, at: u64) -> FileRecord {
    FileRecord {
        file: FileRef {
            id: id.to_owned(),
            name: format!("{id}.png"),
            size,
            mime: "image/png".to_owned(),
        },
        room: room.to_owned(),
        uploader: uploader.to_owned(),
        sha256: "ab".repeat(32),
        created_at: at,
    }
}

/// File records are stored per room, listed newest first, and summed per
/// uploader for quotas.
pub async fn files_round_trip(s: Arc<dyn Store>) {
    s.create_room(room("f", "public"), &[]).await.unwrap();
    s.create_room(room("g", "public"), &[]).await.unwrap();
    let a = file("aaaa", "f", "alice", 100, 1);
    s.put_file(a.clone()).await.unwrap();
    s.put_file(file("bbbb", "f", "bob", 50, 2)).await.unwrap();
    s.put_file(file("cccc", "g", "alice", 7, 3)).await.unwrap();
    assert_eq!(s.file("aaaa").await.unwrap(), Some(a));
    assert_eq!(s.file("zzzz").await.unwrap(), None);
    let ids: Vec<String> = s
        .files("f", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.file.id)
        .collect();
    assert_eq!(ids, ["bbbb", "aaaa"]);
    assert_eq!(s.files("f", 1).await.unwrap().len(), 1);
    assert_eq!(s.bytes_uploaded_by("alice").await.unwrap(), 107);
    assert_eq!(s.bytes_uploaded_by("nobody").await.unwrap(), 0);
    assert!(matches!(
        s.put_file(file("dddd", "ghost", "alice", 1, 4)).await,
        Err(StoreError::NotFound)
    ));
}

/// A message that shares a file keeps its reference through history.
pub async fn messages_keep_their_file(s: Arc<dyn Store>) {
    s.create_room(room("m", "public"), &[]).await.unwrap();
    let f = file("ffff", "m", "alice", 10, 1);
    s.put_file(f.clone()).await.unwrap();
    let mut m = msg("m", "alice", "look", None, 5);
    m.file = Some(f.file.clone());
    let a = s.append(m).await.unwrap();
    assert_eq!(a.message.file.as_ref(), Some(&f.file));
    s.append(msg("m", "bob", "nice", None, 6)).await.unwrap();
    let page = s.history("m", HistoryQuery::latest(10)).await.unwrap();
    assert_eq!(page[0].file.as_ref(), Some(&f.file));
    assert_eq!(page[1].file, None);
}

/// Read markers are per user and room, and never move back.
pub async fn read_markers_only_move_forward(s: Arc<dyn Store>) {
    s.create_room(room("a", "public"), &[]).await.unwrap();
    s.create_room(room("b", "public"), &[]).await.unwrap();
    assert!(s.read_markers("alice").await.unwrap().is_empty());
    s.set_read_marker("alice", "a", 5).await.unwrap();
    s.set_read_marker("alice", "a", 3).await.unwrap();
    s.set_read_marker("alice", "b", 1).await.unwrap();
    s.set_read_marker("bob", "a", 9).await.unwrap();
    let mut m = s.read_markers("alice").await.unwrap();
    m.sort();
    assert_eq!(m, [("a".to_owned(), 5), ("b".to_owned(), 1)]);
    assert!(matches!(
        s.set_read_marker("alice", "ghost", 1).await,
        Err(StoreError::NotFound)
    ));
}
