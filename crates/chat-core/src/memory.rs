//! [`MemoryStore`]: a [`Store`] kept in memory, for tests and for embedding
//! where history need not survive a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::protocol::{Message, Role};
use crate::store::{
    Appended, FileRecord, HistoryQuery, NewMessage, RoomRecord, Store, TokenRecord, UserRecord,
};

/// A [`Store`] in memory. Nothing survives the process; "durable" here means
/// "visible to every later read".
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<String, UserRecord>,
    tokens: HashMap<String, TokenRecord>,
    rooms: BTreeMap<String, RoomData>,
    files: Vec<FileRecord>,
    read: HashMap<(String, String), u64>,
}

#[derive(Debug)]
struct RoomData {
    record: RoomRecord,
    members: BTreeMap<String, Role>,
    messages: Vec<Message>,
    /// (sender, client_id) -> seq, for idempotent appends.
    client_ids: HashMap<(String, String), u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way later readers would misread, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_user(&self, user: UserRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.users.contains_key(&user.name) {
            return Err(StoreError::AlreadyExists);
        }
        inner.users.insert(user.name.clone(), user);
        Ok(())
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.lock().users.get(name).cloned())
    }

    async fn put_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        self.lock().tokens.insert(token.token_hash.clone(), token);
        Ok(())
    }

    async fn token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock().tokens.get(token_hash).cloned())
    }

    async fn delete_token(&self, token_hash: &str) -> Result<(), StoreError> {
        self.lock().tokens.remove(token_hash);
        Ok(())
    }

    async fn create_room(
        &self,
        room: RoomRecord,
        members: &[(String, Role)],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.rooms.contains_key(&room.name) {
            return Err(StoreError::AlreadyExists);
        }
        inner.rooms.insert(
            room.name.clone(),
            RoomData {
                record: room,
                members: members.iter().cloned().collect(),
                messages: Vec::new(),
                client_ids: HashMap::new(),
            },
        );
        Ok(())
    }

    async fn room(&self, name: &str) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self.lock().rooms.get(name).map(|r| r.record.clone()))
    }

    async fn rooms_of_kinds(
        &self,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        Ok(self
            .lock()
            .rooms
            .values()
            .filter(|r| kinds.contains(&r.record.kind))
            .take(limit as usize)
            .map(|r| r.record.clone())
            .collect())
    }

    async fn memberships(&self, user: &str) -> Result<Vec<(RoomRecord, Role)>, StoreError> {
        Ok(self
            .lock()
            .rooms
            .values()
            .filter_map(|r| r.members.get(user).map(|&role| (r.record.clone(), role)))
            .collect())
    }

    async fn set_member(&self, room: &str, user: &str, role: Role) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let data = inner.rooms.get_mut(room).ok_or(StoreError::NotFound)?;
        data.members.insert(user.to_owned(), role);
        Ok(())
    }

    async fn remove_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let data = inner.rooms.get_mut(room).ok_or(StoreError::NotFound)?;
        Ok(data.members.remove(user).is_some())
    }

    async fn member_role(&self, room: &str, user: &str) -> Result<Option<Role>, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get(room)
            .and_then(|r| r.members.get(user).copied()))
    }

    async fn members(&self, room: &str) -> Result<Vec<(String, Role)>, StoreError> {
        let inner = self.lock();
        let data = inner.rooms.get(room).ok_or(StoreError::NotFound)?;
        Ok(data.members.iter().map(|(u, r)| (u.clone(), *r)).collect())
    }

    async fn append(&self, m: NewMessage) -> Result<Appended, StoreError> {
        let mut inner = self.lock();
        let data = inner.rooms.get_mut(&m.room).ok_or(StoreError::NotFound)?;
        if let Some(cid) = &m.client_id {
            if let Some(&seq) = data.client_ids.get(&(m.sender.clone(), cid.clone())) {
                let message = data.messages[(seq - 1) as usize].clone();
                return Ok(Appended {
                    message,
                    duplicate: true,
                });
            }
        }
        let seq = data.messages.len() as u64 + 1;
        let message = Message {
            room: m.room,
            seq,
            sender: m.sender,
            body: m.body,
            ts: m.ts,
            kind: m.kind,
            client_id: m.client_id,
            file: m.file,
        };
        if let Some(cid) = &message.client_id {
            data.client_ids
                .insert((message.sender.clone(), cid.clone()), seq);
        }
        data.messages.push(message.clone());
        Ok(Appended {
            message,
            duplicate: false,
        })
    }

    async fn history(&self, room: &str, q: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        let inner = self.lock();
        let data = inner.rooms.get(room).ok_or(StoreError::NotFound)?;
        let msgs = &data.messages;
        // seq n lives at index n-1.
        let lo = q.after.map_or(0, |a| a.min(msgs.len() as u64) as usize);
        let hi = q.before.map_or(msgs.len(), |b| {
            (b.saturating_sub(1) as usize).min(msgs.len())
        });
        if lo >= hi {
            return Ok(Vec::new());
        }
        let limit = q.limit as usize;
        let range = if q.after.is_some() {
            lo..hi.min(lo.saturating_add(limit))
        } else {
            hi.saturating_sub(limit).max(lo)..hi
        };
        Ok(msgs[range].to_vec())
    }

    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        let inner = self.lock();
        let data = inner.rooms.get(room).ok_or(StoreError::NotFound)?;
        Ok(data.messages.len() as u64)
    }

    async fn put_file(&self, file: FileRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.rooms.contains_key(&file.room) {
            return Err(StoreError::NotFound);
        }
        if inner.files.iter().any(|f| f.file.id == file.file.id) {
            return Err(StoreError::AlreadyExists);
        }
        inner.files.push(file);
        Ok(())
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self.lock().files.iter().find(|f| f.file.id == id).cloned())
    }

    async fn files(&self, room: &str, limit: u32) -> Result<Vec<FileRecord>, StoreError> {
        Ok(self
            .lock()
            .files
            .iter()
            .rev()
            .filter(|f| f.room == room)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn bytes_uploaded_by(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .files
            .iter()
            .filter(|f| f.uploader == user)
            .map(|f| f.file.size)
            .sum())
    }

    async fn set_read_marker(&self, user: &str, room: &str, seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.rooms.contains_key(room) {
            return Err(StoreError::NotFound);
        }
        let e = inner
            .read
            .entry((user.to_owned(), room.to_owned()))
            .or_insert(0);
        *e = (*e).max(seq);
        Ok(())
    }

    async fn read_markers(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut v: Vec<(String, u64)> = self
            .lock()
            .read
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, r), s)| (r.clone(), *s))
            .collect();
        v.sort();
        Ok(v)
    }

    async fn seq_at(&self, room: &str, ts: u64) -> Result<u64, StoreError> {
        let inner = self.lock();
        let data = inner.rooms.get(room).ok_or(StoreError::NotFound)?;
        let idx = data.messages.partition_point(|m| m.ts < ts);
        Ok(idx as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    crate::store_conformance_tests!(super::MemoryStore::new());
}
