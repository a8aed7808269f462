// The client's state: rooms and their messages by seq.

export const PAGE = 50;

export const TOKEN_KEY = "chat.token";

export const state = {
  token: localStorage.getItem(TOKEN_KEY),
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
  privateAsks: new Map(), // room -> count of smart-reply requests in flight
  privateStreams: new Set(),
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

export function room(name) {
  let r = state.rooms.get(name);
  if (!r) {
    r = {
      name, kind: "public", topic: "", role: null, lastSeq: 0,
      msgs: new Map(), cursor: null, subscribed: false, hasMore: true,
      loadingHistory: false, historyLoaded: false, unread: 0,
      members: new Map(), membersLoaded: false, typing: new Map(),
      streams: new Map(), replaceOnSeq: new Map(),
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
