//! The [`Room`] extension point: a room kind's policy (who may see, read,
//! join, post and manage), and the built-in kinds.
//!
//! Access is decided here, in the core, for every transport and endpoint
//! (invariant 5). A host adds its own kind by implementing [`Room`] and
//! registering it with [`EngineBuilder::room_kind`](crate::EngineBuilder::room_kind).

use crate::protocol::Role;

/// Something a user may try to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Know the room exists (listing, lookup by name).
    See,
    /// Read history and subscribe to live messages.
    Read,
    /// Join by themselves.
    Join,
    /// Post a message.
    Post,
    /// Invite, remove and change roles of members.
    Manage,
}

/// A room kind's policy. `role` is the caller's role in the room, or `None`
/// for a non-member.
pub trait Room: Send + Sync + 'static {
    /// The kind's name, as used in `create_room`.
    fn kind(&self) -> &str;

    /// Whether a user with `role` may do `action`.
    fn permits(&self, action: Action, role: Option<Role>) -> bool;

    /// Whether users may create rooms of this kind with `create_room`
    /// (direct rooms are made by `open_direct` instead).
    fn creatable(&self) -> bool {
        true
    }

    /// Whether the room's bot members answer every message, not only
    /// mentions and `ask` requests.
    fn bots_answer_all(&self) -> bool {
        false
    }
}

fn member(role: Option<Role>) -> bool {
    role.is_some()
}

fn admin(role: Option<Role>) -> bool {
    role == Some(Role::Admin)
}

/// Open to everyone: anyone sees, reads and joins; members post.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicRoom;

impl Room for PublicRoom {
    fn kind(&self) -> &str {
        "public"
    }
    fn permits(&self, action: Action, role: Option<Role>) -> bool {
        match action {
            Action::See | Action::Read | Action::Join => true,
            Action::Post => member(role),
            Action::Manage => admin(role),
        }
    }
}

/// Invitation only: invisible and closed to non-members.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivateRoom;

impl Room for PrivateRoom {
    fn kind(&self) -> &str {
        "private"
    }
    fn permits(&self, action: Action, role: Option<Role>) -> bool {
        match action {
            Action::See | Action::Read | Action::Post => member(role),
            Action::Join => false,
            Action::Manage => admin(role),
        }
    }
}

/// A conversation between exactly two parties; nobody else may enter and
/// nobody manages it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectRoom;

impl Room for DirectRoom {
    fn kind(&self) -> &str {
        "direct"
    }
    fn permits(&self, action: Action, role: Option<Role>) -> bool {
        match action {
            Action::See | Action::Read | Action::Post => member(role),
            Action::Join | Action::Manage => false,
        }
    }
    fn creatable(&self) -> bool {
        false
    }
    fn bots_answer_all(&self) -> bool {
        true
    }
}

/// Public to read and join, but only admins (and bots) post.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnnouncementRoom;

impl Room for AnnouncementRoom {
    fn kind(&self) -> &str {
        "announcement"
    }
    fn permits(&self, action: Action, role: Option<Role>) -> bool {
        match action {
            Action::See | Action::Read | Action::Join => true,
            Action::Post => matches!(role, Some(Role::Admin | Role::Bot)),
            Action::Manage => admin(role),
        }
    }
}

/// A public room where the bot members answer every message.
#[derive(Debug, Clone, Copy, Default)]
pub struct BotRoom;

impl Room for BotRoom {
    fn kind(&self) -> &str {
        "bot"
    }
    fn permits(&self, action: Action, role: Option<Role>) -> bool {
        PublicRoom.permits(action, role)
    }
    fn bots_answer_all(&self) -> bool {
        true
    }
}

/// The name of the direct room between two users: `dm:` and both names,
/// sorted, so either side finds the same room.
pub fn direct_room_name(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{x}:{y}")
}

/// Whether a room name is acceptable for `create_room`: 1 to 64 of
/// `a-z 0-9 _ -`. Names with `:` are reserved for direct rooms.
pub fn valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_direct_rooms_are_closed_to_non_members() {
        for kind in [&PrivateRoom as &dyn Room, &DirectRoom] {
            for action in [
                Action::See,
                Action::Read,
                Action::Join,
                Action::Post,
                Action::Manage,
            ] {
                assert!(!kind.permits(action, None), "{} {action:?}", kind.kind());
            }
        }
    }

    #[test]
    fn only_admins_manage() {
        for kind in [
            &PublicRoom as &dyn Room,
            &PrivateRoom,
            &AnnouncementRoom,
            &BotRoom,
        ] {
            assert!(kind.permits(Action::Manage, Some(Role::Admin)));
            assert!(!kind.permits(Action::Manage, Some(Role::Member)));
            assert!(!kind.permits(Action::Manage, None));
        }
    }

    #[test]
    fn announcements_are_read_only_for_members() {
        assert!(!AnnouncementRoom.permits(Action::Post, Some(Role::Member)));
        assert!(AnnouncementRoom.permits(Action::Post, Some(Role::Admin)));
        assert!(AnnouncementRoom.permits(Action::Read, None));
    }

    #[test]
    fn direct_names_are_symmetric_and_reserved() {
        assert_eq!(
            direct_room_name("bob", "alice"),
            direct_room_name("alice", "bob")
        );
        assert!(!valid_room_name(&direct_room_name("a", "b")));
        assert!(valid_room_name("general-2"));
        assert!(!valid_room_name(""));
        assert!(!valid_room_name("Caps"));
        assert!(!valid_room_name(&"x".repeat(65)));
    }
}
