// The client's state: rooms and their messages by seq.

export const PAGE = 50;

export const TOKEN_KEY = "chat.token";
/** When the stored token was issued (ms), to refresh it at half its life. */
export const ISSUED_KEY = "chat.token.issued";
/** "on" when the user turned desktop notifications on with the bell. */
export const NOTIFY_KEY = "chat.notify";

export const state = {
  token: localStorage.getItem(TOKEN_KEY),
  expiresAt: 0,
  tokenTimer: null,
  user: null,
  rooms: new Map(), // name -> room
  active: null,
  ws: null,
  connected: false,
  nextId: 1,
  calls: new Map(), // id -> {resolve, reject}
  backoff: 500,
  retryTimer: null,
  refreshTimer: null,
  outbox: new Map(), // client_id -> {room, body}
  privateStreams: new Set(), // smart-reply streams (bot_delta private: true)
  uploads: new Map(), // client_id -> {room, name, size, loaded, xhr}
  fileLimits: null, // GET /api/files: {enabled, max_file_bytes, extensions}
  lastTyping: 0,
  stopped: true,
  showMembers: true,
};

export function displayName(room) {
  if (room.kind === "direct") {
    const parts = room.name.split(":");
    return parts.slice(1).find((p) => p !== state.user) || parts[1];
  }
  return room.name;
}

/** Stores a token (and when it was issued) for the next visits. */
export function setToken(token, expiresAt) {
  state.token = token;
  state.expiresAt = expiresAt || 0;
  localStorage.setItem(TOKEN_KEY, token);
  localStorage.setItem(ISSUED_KEY, String(Date.now()));
}

export function room(name) {
  let r = state.rooms.get(name);
  if (!r) {
    r = {
      name, kind: "public", topic: "", role: null, lastSeq: 0,
      msgs: new Map(), cursor: null, subscribed: false, hasMore: true,
      loadingHistory: false, historyLoaded: false, unread: 0,
      members: new Map(), membersLoaded: false, typing: new Map(),
      streams: new Map(), replaceOnSeq: new Map(), mentions: 0,
      files: [], filesLoaded: false,
    };
    state.rooms.set(name, r);
  }
  return r;
}

export function sortedMsgs(r) {
  return [...r.msgs.values()].sort((a, b) => a.seq - b.seq);
}

export function minSeq(r) {
  let m = Infinity;
  for (const s of r.msgs.keys()) m = Math.min(m, s);
  return m === Infinity ? null : m;
}
