// The chat web client: one page, no build step, no dependencies.
//
// It speaks the engine's JSON frames over /ws and keeps, per room, the
// messages it has seen by seq. After a dropped connection it reconnects
// with backoff, logs in again with the token kept in localStorage, and
// subscribes with the last seq it saw in each room: the server replays what
// was missed, and messages are de-duplicated by seq, so nothing is lost or
// shown twice.
//
// Files go over HTTP (files.js), mentions raise toasts and desktop
// notifications (notify.js), and the token is renewed at half its life
// with a `refresh_token` frame (auth.js). Bot replies: bots.js.

import { $, toast, randomId } from "./util.js";
import { PAGE, TOKEN_KEY, state, room, minSeq } from "./state.js";
import { initFiles, loadLimits, noteFile, renderFiles } from "./files.js";
import { onMention, renderBell, toggleBell } from "./notify.js";
import {
  appendOrRender, autosize, hideBanner, renderChips, renderMembers,
  renderMessages, renderPane, renderPending, renderRooms, renderTyping, scrollToBottom, setConnState, showBanner,
} from "./view.js";
import { setMode, authSubmit, start, logout, showAuth, showApp, refreshToken, scheduleTokenRefresh } from "./auth.js";
import { ask, dropStream, onBotDelta, onBotDone, suggest } from "./bots.js";

/**
 * Marks a room read up to `seq` on the server (read markers follow the user
 * across devices). Debounced: one mark_read per room and half second.
 */
function markRead(r, seq) {
  if (!seq || seq <= (r.readSent || 0)) return;
  r.readWanted = Math.max(r.readWanted || 0, seq);
  if (r.readTimer) return;
  r.readTimer = setTimeout(() => {
    r.readTimer = null;
    if (send({ type: "mark_read", id: state.nextId++, room: r.name, seq: r.readWanted })) r.readSent = r.readWanted;
  }, 500);
}

function wsUrl() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
}

export function connect() {
  clearTimeout(state.retryTimer);
  if (state.stopped) return;
  setConnState("connecting…");
  const ws = new WebSocket(wsUrl());
  state.ws = ws;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return;
    let f;
    try {
      f = JSON.parse(ev.data);
    } catch {
      return;
    }
    onFrame(f);
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.connected = false;
    state.ws = null;
    for (const r of state.rooms.values()) r.subscribed = false;
    for (const { reject } of state.calls.values()) reject({ code: "disconnected", message: "connection lost" });
    state.calls.clear();
    clearInterval(state.refreshTimer);
    clearTimeout(state.tokenTimer);
    if (state.stopped) return;
    const delay = ev.code === 4000 ? 100 : state.backoff + Math.random() * state.backoff * 0.3;
    state.backoff = Math.min(state.backoff * 2, 15000);
    showBanner(`Connection lost. Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    setConnState("offline");
    state.retryTimer = setTimeout(connect, delay);
  };
}

export function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

export function call(frame) {
  return new Promise((resolve, reject) => {
    const id = state.nextId++;
    if (!send({ ...frame, id })) {
      reject({ code: "disconnected", message: "not connected" });
      return;
    }
    state.calls.set(id, { resolve, reject });
  });
}

async function onHello() {
  // Another tab may have renewed the token meanwhile.
  state.token = localStorage.getItem(TOKEN_KEY) || state.token;
  try {
    const authed = await call({ type: "auth", token: state.token });
    state.user = authed.user;
    state.expiresAt = authed.expires_at;
  } catch (e) {
    if (["invalid_token", "token_expired", "unauthenticated"].includes(e.code)) {
      logout(false);
      showAuth("Your session has ended. Please log in again.");
    }
    return;
  }
  state.connected = true;
  state.backoff = 500;
  hideBanner();
  setConnState("online");
  showApp();
  scheduleTokenRefresh();
  loadLimits();
  await refreshRooms(true);
  // Messages sent while offline: the same client_id stores them once.
  for (const [clientId, m] of state.outbox) sendMessage(m.room, m.body, clientId);
  clearInterval(state.refreshTimer);
  // Invitations and new direct rooms are found by refreshing the list.
  state.refreshTimer = setInterval(() => refreshRooms(false), 15000);
}

async function refreshRooms(first) {
  let reply;
  try {
    reply = await call({ type: "list_rooms" });
  } catch {
    return;
  }
  const seen = new Set();
  for (const info of reply.rooms) {
    seen.add(info.name);
    const r = room(info.name);
    Object.assign(r, { kind: info.kind, topic: info.topic, role: info.role || null, lastSeq: info.last_seq });
    // The server counts unread messages from the read markers.
    if (r.role && r.name !== state.active) r.unread = info.unread || 0;
  }
  for (const name of [...state.rooms.keys()]) {
    if (!seen.has(name)) state.rooms.delete(name);
  }
  subscribeAll();
  renderRooms();
  if (first) {
    const want = state.active && state.rooms.has(state.active) ? state.active : localStorage.getItem("chat.active." + state.user);
    const pick = want && state.rooms.get(want)?.role ? want : [...state.rooms.values()].find((r) => r.role)?.name;
    if (pick) openRoom(pick);
    else renderPane();
  }
}

function subscribeAll() {
  const cursors = [];
  for (const r of state.rooms.values()) {
    if (!r.role || r.subscribed) continue;
    r.subscribed = true;
    // First time: start after what exists now (history loads on demand).
    // After a reconnect: everything after the last seq seen is replayed.
    if (r.cursor === null) r.cursor = r.lastSeq;
    cursors.push({ room: r.name, last_seq: r.cursor });
  }
  if (cursors.length) send({ type: "subscribe", id: state.nextId++, rooms: cursors });
}

function onFrame(f) {
  if (f.id !== undefined && state.calls.has(f.id) && f.type !== "subscribed") {
    const { resolve, reject } = state.calls.get(f.id);
    state.calls.delete(f.id);
    if (f.type === "error") reject(f);
    else resolve(f);
    if (f.type !== "suggestions") return;
  }
  switch (f.type) {
    case "hello":
      onHello();
      break;
    case "message":
      onMessage(f.message);
      break;
    case "subscribed": {
      const r = state.rooms.get(f.room);
      if (r) r.cursor = Math.max(r.cursor || 0, f.last_seq);
      break;
    }
    case "member_event":
      onMemberEvent(f);
      break;
    case "presence": {
      const r = state.rooms.get(f.room);
      const m = r && r.members.get(f.user);
      if (m) {
        m.online = f.status !== "offline";
        if (f.room === state.active) renderMembers();
      }
      break;
    }
    case "typing":
      onTyping(f);
      break;
    case "mention": {
      const r = state.rooms.get(f.room);
      if (!r || !r.role) refreshRooms(false);
      onMention(f, openRoom);
      break;
    }
    case "bot_delta":
      onBotDelta(f);
      break;
    case "bot_done":
      onBotDone(f);
      break;
    case "suggestions":
      if (f.room === state.active) renderChips(f.replies);
      break;
    case "error":
      if (f.code === "lagged" || f.code === "not_found") break;
      toast(f.message, true);
      break;
    case "closing":
      showBanner(f.reason === "shutting_down" ? "The server is restarting…" : `Disconnected: ${f.message}`);
      break;
  }
}

function onMessage(m) {
  const r = room(m.room);
  if (r.msgs.has(m.seq)) return; // replayed twice: shown once
  r.msgs.set(m.seq, m);
  r.cursor = Math.max(r.cursor || 0, m.seq);
  r.lastSeq = Math.max(r.lastSeq, m.seq);
  r.typing.delete(m.sender);
  if (m.file) noteFile(r, m);
  if (m.client_id && m.sender === state.user) {
    state.outbox.delete(m.client_id);
    document.querySelector(`[data-client-id="${m.client_id}"]`)?.remove();
  }
  const stream = r.replaceOnSeq.get(m.seq);
  if (stream !== undefined) {
    r.replaceOnSeq.delete(m.seq);
    dropStream(r, stream);
  }
  if (m.room === state.active) {
    if (document.visibilityState !== "hidden") markRead(r, m.seq);
    appendOrRender(r, m);
    renderTyping();
  } else if (m.sender !== state.user && m.seq > (r.readSent || 0)) {
    r.unread += 1;
    renderRooms();
  }
}

async function loadHistory(r) {
  if (r.loadingHistory || !r.hasMore || !state.connected) return;
  r.loadingHistory = true;
  $("history-state").textContent = "Loading earlier messages…";
  const before = minSeq(r) ?? (r.cursor || 0) + 1;
  try {
    const h = await call({ type: "history", room: r.name, before, limit: PAGE });
    for (const m of h.messages) if (!r.msgs.has(m.seq)) r.msgs.set(m.seq, m);
    r.hasMore = h.has_more;
    r.historyLoaded = true;
  } catch (e) {
    if (e.code !== "disconnected") toast(`History: ${e.message}`, true);
  }
  r.loadingHistory = false;
  if (r.name === state.active) {
    const first = !$("messages").childElementCount;
    renderMessages(!first);
    // Fill the screen: keep loading while there is no scroll bar yet.
    const s = $("scroller");
    if (r.hasMore && s.scrollHeight <= s.clientHeight) loadHistory(r);
  }
}

async function loadMembers(r) {
  try {
    const reply = await call({ type: "members", room: r.name });
    r.members = new Map(reply.members.map((m) => [m.user, m]));
    r.membersLoaded = true;
    if (r.name === state.active) renderMembers();
  } catch {
    /* not connected; loaded again on the next open */
  }
}

async function loadFiles(r) {
  try {
    const reply = await call({ type: "list_files", room: r.name });
    r.files = reply.files;
    r.filesLoaded = true;
    if (r.name === state.active) renderFiles();
  } catch {
    /* file sharing off, or not connected */
  }
}

function onMemberEvent(f) {
  if (f.change === "invited" && f.user === state.user && !state.rooms.get(f.room)?.role) {
    // Added to a room, or someone opened a direct room with me: show it now.
    const dm = f.room.startsWith("dm:");
    const who = dm ? f.room.split(":").slice(1).find((p) => p !== state.user) : null;
    toast(dm ? `${who} started a conversation with you` : `You were added to #${f.room}`);
    refreshRooms(false);
    return;
  }
  const r = state.rooms.get(f.room);
  if (!r) return;
  if (f.change === "left" || f.change === "removed") {
    r.members.delete(f.user);
    if (f.user === state.user) {
      r.role = null;
      r.subscribed = false;
      if (state.active === f.room) {
        state.active = null;
        renderPane();
      }
      renderRooms();
    }
  } else {
    const m = r.members.get(f.user) || { user: f.user, online: true };
    m.role = f.role || m.role;
    r.members.set(f.user, m);
  }
  if (f.room === state.active) renderMembers();
}

function onTyping(f) {
  if (f.user === state.user) return;
  const r = room(f.room);
  clearTimeout(r.typing.get(f.user));
  r.typing.set(f.user, setTimeout(() => {
    r.typing.delete(f.user);
    renderTyping();
  }, 4000));
  renderTyping();
}

export function openRoom(name) {
  const r = state.rooms.get(name);
  if (!r || !r.role) return;
  state.active = name;
  localStorage.setItem("chat.active." + state.user, name);
  r.unread = 0;
  r.mentions = 0;
  markRead(r, r.lastSeq);
  renderRooms();
  renderPane();
  if (!r.historyLoaded) loadHistory(r);
  loadMembers(r);
  loadFiles(r);
  $("input").focus();
}

export async function joinRoom(name) {
  try {
    const reply = await call({ type: "join", room: name });
    const r = room(name);
    Object.assign(r, { role: reply.room.role, kind: reply.room.kind, topic: reply.room.topic, lastSeq: reply.room.last_seq });
    subscribeAll();
    openRoom(name);
  } catch (e) {
    toast(`Cannot join ${name}: ${e.message}`, true);
  }
}

function sendMessage(roomName, body, clientId) {
  const id = clientId || randomId();
  state.outbox.set(id, { room: roomName, body });
  const r = state.rooms.get(roomName);
  if (r && roomName === state.active) {
    renderPending(r);
    scrollToBottom();
  }
  call({ type: "send", room: roomName, body, client_id: id }).catch((e) => {
    if (e.code === "disconnected") return; // resent after reconnecting
    state.outbox.delete(id);
    document.querySelector(`[data-client-id="${id}"]`)?.remove();
    toast(`Not sent: ${e.message}`, true);
    if (!$("input").value) $("input").value = body;
  });
}

async function submit(ev) {
  ev.preventDefault();
  const input = $("input");
  const text = input.value.trim();
  const r = state.rooms.get(state.active);
  if (!text || !r) return;
  input.value = "";
  state.lastTyping = 0;
  autosize();
  $("chips").textContent = "";
  if (text.startsWith("/ask")) {
    const prompt = text.slice(4).trim();
    if (!prompt) return toast("Usage: /ask your question", true);
    return ask(r, { task: "answer", prompt });
  }
  if (text.startsWith("/summarize")) {
    const count = parseInt(text.slice(10).trim(), 10) || 50;
    return ask(r, { task: "summarize", count });
  }
  sendMessage(r.name, text);
}

function onInput() {
  autosize();
  const now = Date.now();
  if (state.active && now - state.lastTyping > 1500 && $("input").value.trim()) {
    state.lastTyping = now;
    send({ type: "typing", room: state.active });
  }
}

function dialog(id, formId, errorId, action) {
  const d = $(id);
  d.querySelector("[data-close]").onclick = () => d.close();
  $(formId).onsubmit = async (ev) => {
    ev.preventDefault();
    $(errorId).textContent = "";
    try {
      await action();
      d.close();
      $(formId).reset();
    } catch (e) {
      $(errorId).textContent = e.message || String(e);
    }
  };
  return d;
}

function init() {
  $("tab-login").onclick = () => setMode(false);
  $("tab-signup").onclick = () => setMode(true);
  $("auth-form").onsubmit = authSubmit;
  $("logout").onclick = () => logout(true);
  $("composer").onsubmit = submit;
  $("input").addEventListener("input", onInput);
  $("input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) submit(ev);
  });
  $("suggest").onclick = suggest;
  $("scroller").addEventListener("scroll", () => {
    const r = state.rooms.get(state.active);
    if (r && $("scroller").scrollTop < 80) loadHistory(r);
  });
  $("toggle-members").onclick = () => {
    state.showMembers = !state.showMembers;
    $("members").hidden = !state.showMembers;
  };
  $("close-members").onclick = () => {
    state.showMembers = false;
    $("members").hidden = true;
  };
  $("leave-room").onclick = async () => {
    const name = state.active;
    try {
      await call({ type: "leave", room: name });
      const r = state.rooms.get(name);
      if (r) Object.assign(r, { role: null, subscribed: false });
      state.active = null;
      renderRooms();
      renderPane();
    } catch (e) {
      toast(`Cannot leave: ${e.message}`, true);
    }
  };
  $("invite-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const user = $("invite-user").value.trim();
    try {
      await call({ type: "invite", room: state.active, user });
      $("invite-user").value = "";
      toast(`${user} was added to the room`);
      loadMembers(state.rooms.get(state.active));
    } catch (e) {
      toast(`Cannot invite ${user}: ${e.message}`, true);
    }
  };
  const roomDialog = dialog("room-dialog", "room-form", "room-error", async () => {
    const name = $("room-new-name").value.trim();
    const reply = await call({ type: "create_room", room: name, kind: $("room-new-kind").value, topic: $("room-new-topic").value.trim() });
    const r = room(name);
    Object.assign(r, { kind: reply.room.kind, topic: reply.room.topic, role: reply.room.role, lastSeq: 0, hasMore: false, historyLoaded: true });
    subscribeAll();
    openRoom(name);
  });
  $("new-room").onclick = () => roomDialog.showModal();
  const dmDialog = dialog("dm-dialog", "dm-form", "dm-error", async () => {
    const reply = await call({ type: "open_direct", user: $("dm-user").value.trim() });
    const r = room(reply.room.name);
    Object.assign(r, { kind: reply.room.kind, topic: reply.room.topic, role: reply.room.role || "member", lastSeq: reply.room.last_seq });
    subscribeAll();
    openRoom(r.name);
  });
  $("new-dm").onclick = () => dmDialog.showModal();
  initFiles(() => state.rooms.get(state.active));
  $("notify-toggle").onclick = toggleBell;
  renderBell();
  // A token renewed (or a log out) in another tab.
  window.addEventListener("storage", (ev) => {
    if (ev.key === TOKEN_KEY && ev.newValue) state.token = ev.newValue;
  });
  document.addEventListener("visibilitychange", () => {
    const r = state.rooms.get(state.active);
    if (document.visibilityState === "visible" && r) {
      r.unread = 0;
      markRead(r, r.cursor);
      renderRooms();
    }
  });
  // Test and debugging hook: drop the socket as a network failure would.
  window.chatDebug = {
    state,
    dropConnection() {
      if (state.ws) state.ws.close(4999, "debug drop");
    },
    refreshToken,
  };
  state.showMembers = window.innerWidth >= 1100;
  if (state.token) start();
  else showAuth("");
}

init();
