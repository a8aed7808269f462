//! The wire form of one event on the channel: a small binary header, then
//! the frame's bytes exactly as the engine encoded them (no JSON is parsed
//! or re-encoded on either side).
//!
//! ```text
//! byte 0      version (1)
//! byte 1      flags: 1 = has seq, 2 = has revoke, 4 = resync notice
//! bytes 2..10 origin node id, u64 big-endian
//! u16 BE      room length, then the room name (UTF-8)
//! [u64 BE]    seq, when flag 1
//! [u16 BE]    revoke length, then the user name (UTF-8), when flag 2
//! rest        the encoded server frame
//! ```
//!
//! A *resync notice* carries no room event: a node that failed to publish
//! sends one once it is connected again, and every other node catches up
//! from the store.

use std::sync::Arc;

use bytes::Bytes;
use chat_core::RoomEvent;

use crate::Error;

const VERSION: u8 = 1;
const HAS_SEQ: u8 = 1;
const HAS_REVOKE: u8 = 2;
const RESYNC: u8 = 4;
const KNOWN_FLAGS: u8 = HAS_SEQ | HAS_REVOKE | RESYNC;

/// Size of the smallest message, a resync notice: version, flags, origin
/// and an empty room name.
pub(crate) const MIN_MESSAGE_BYTES: usize = 2 + 8 + 2;

/// One decoded message of the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Packet {
    /// A room event.
    Event {
        /// The node that published it.
        origin: u64,
        /// The event.
        event: RoomEvent,
    },
    /// A node asks every other node to catch up from the store.
    Resync {
        /// The node that sent it.
        origin: u64,
    },
}

/// Why a received message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ends before its header does.
    #[error("truncated event header")]
    Truncated,
    /// The version byte is not one this code reads.
    #[error("unknown event version {0}")]
    Version(u8),
    /// The flags byte has bits this code does not know.
    #[error("unknown event flags {0:#04x}")]
    Flags(u8),
    /// A room or user name is not UTF-8.
    #[error("a name in the event header is not UTF-8")]
    NotUtf8,
    /// The message is larger than `max_event_bytes`.
    #[error("event of {0} bytes is over the limit")]
    TooLarge(usize),
}

fn name_len(what: &'static str, name: &str) -> Result<u16, Error> {
    u16::try_from(name.len()).map_err(|_| Error::NameTooLong {
        what,
        len: name.len(),
    })
}

/// Encodes an event published by `origin`; refuses one larger than `max`.
pub(crate) fn encode(origin: u64, ev: &RoomEvent, max: usize) -> Result<Vec<u8>, Error> {
    let room_len = name_len("room", &ev.room)?;
    let revoke_len = match &ev.revoke {
        Some(user) => Some(name_len("user", user)?),
        None => None,
    };
    let size = 2
        + 8
        + 2
        + ev.room.len()
        + ev.seq.map_or(0, |_| 8)
        + ev.revoke.as_ref().map_or(0, |u| 2 + u.len())
        + ev.frame.len();
    if size > max {
        return Err(Error::EventTooLarge { size, max });
    }
    let mut flags = 0;
    if ev.seq.is_some() {
        flags |= HAS_SEQ;
    }
    if revoke_len.is_some() {
        flags |= HAS_REVOKE;
    }
    let mut out = Vec::with_capacity(size);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&room_len.to_be_bytes());
    out.extend_from_slice(ev.room.as_bytes());
    if let Some(seq) = ev.seq {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    if let (Some(len), Some(user)) = (revoke_len, &ev.revoke) {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(user.as_bytes());
    }
    out.extend_from_slice(&ev.frame);
    Ok(out)
}

/// Encodes a resync notice from `origin`.
pub(crate) fn encode_resync(origin: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_MESSAGE_BYTES);
    out.push(VERSION);
    out.push(RESYNC);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out
}

/// Reads a header field by field; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn name(&mut self) -> Result<Arc<str>, DecodeError> {
        let len = u16::from_be_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|_| DecodeError::NotUtf8)
    }
}

/// Decodes one message of the channel; refuses one larger than `max`.
pub(crate) fn decode(buf: &[u8], max: usize) -> Result<Packet, DecodeError> {
    if buf.len() > max {
        return Err(DecodeError::TooLarge(buf.len()));
    }
    let mut r = Reader { buf };
    let [version, flags] = r.array()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let origin = u64::from_be_bytes(r.array()?);
    if flags & RESYNC != 0 {
        return Ok(Packet::Resync { origin });
    }
    let room = r.name()?;
    let seq = if flags & HAS_SEQ != 0 {
        Some(u64::from_be_bytes(r.array()?))
    } else {
        None
    };
    let revoke = if flags & HAS_REVOKE != 0 {
        Some(r.name()?)
    } else {
        None
    };
    let event = RoomEvent {
        room,
        seq,
        frame: Bytes::copy_from_slice(r.buf),
        revoke,
    };
    Ok(Packet::Event { origin, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(seq: Option<u64>, revoke: Option<&str>) -> RoomEvent {
        RoomEvent {
            room: Arc::from("lobby"),
            seq,
            frame: Bytes::from_static(br#"{"type":"message"}"#),
            revoke: revoke.map(Arc::from),
        }
    }

    #[test]
    fn events_round_trip_with_their_frame_bytes_untouched() {
        for ev in [
            event(Some(42), None),
            event(None, None),
            event(None, Some("bob")),
            event(Some(u64::MAX), Some("ünïcode")),
        ] {
            let wire = encode(7, &ev, 1 << 20).unwrap();
            assert!(wire.ends_with(&ev.frame));
            assert_eq!(
                decode(&wire, 1 << 20).unwrap(),
                Packet::Event {
                    origin: 7,
                    event: ev
                }
            );
        }
        assert_eq!(
            decode(&encode_resync(9), 64).unwrap(),
            Packet::Resync { origin: 9 }
        );
    }

    #[test]
    fn the_header_is_small() {
        let ev = event(Some(1), None);
        let wire = encode(1, &ev, 1 << 20).unwrap();
        assert_eq!(wire.len() - ev.frame.len(), 2 + 8 + 2 + 5 + 8);
    }

    #[test]
    fn oversized_events_and_names_are_refused() {
        let ev = event(Some(1), None);
        let len = encode(1, &ev, 1 << 20).unwrap().len();
        assert!(matches!(
            encode(1, &ev, len - 1),
            Err(Error::EventTooLarge { .. })
        ));
        assert_eq!(
            decode(&encode(1, &ev, len).unwrap(), len - 1),
            Err(DecodeError::TooLarge(len))
        );
        let mut long = ev.clone();
        long.room = Arc::from("r".repeat(70_000));
        assert!(matches!(
            encode(1, &long, usize::MAX),
            Err(Error::NameTooLong { what: "room", .. })
        ));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let wire = encode(1, &event(Some(3), Some("bob")), 1 << 20).unwrap();
        assert_eq!(decode(&[], 99), Err(DecodeError::Truncated));
        assert_eq!(decode(&wire[..15], 99), Err(DecodeError::Truncated));
        let mut v2 = wire.clone();
        v2[0] = 2;
        assert_eq!(decode(&v2, 99), Err(DecodeError::Version(2)));
        let mut flags = wire.clone();
        flags[1] = 0x80;
        assert_eq!(decode(&flags, 99), Err(DecodeError::Flags(0x80)));
        let mut utf8 = wire;
        utf8[12] = 0xff;
        assert_eq!(decode(&utf8, 99), Err(DecodeError::NotUtf8));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes, 1 << 20);
        }

        #[test]
        fn any_event_round_trips(
            origin in any::<u64>(),
            room in "\\PC{0,20}",
            seq in proptest::option::of(any::<u64>()),
            revoke in proptest::option::of("\\PC{0,12}"),
            frame in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let ev = RoomEvent {
                room: Arc::from(room.as_str()),
                seq,
                frame: Bytes::from(frame),
                revoke: revoke.map(|r| Arc::from(r.as_str())),
            };
            let wire = encode(origin, &ev, 1 << 20).unwrap();
            prop_assert_eq!(decode(&wire, 1 << 20).unwrap(), Packet::Event { origin, event: ev });
        }
    }
}
