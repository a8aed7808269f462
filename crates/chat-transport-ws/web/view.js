// Rendering: the room list, the message pane, members, typing, chips.

import { $, el, avatar, fmtTime, fmtDay, roomIcon } from "./util.js";
import { state, displayName, sortedMsgs } from "./state.js";
import { openRoom, joinRoom } from "./app.js";
import { attachmentEl, renderFiles, renderUploads } from "./files.js";

export function appendOrRender(r, m) {
  const box = $("messages");
  const last = box.lastElementChild;
  const lastSeq = last ? Number(last.dataset.seq || 0) : 0;
  if (last && m.seq < lastSeq) return renderMessages(false);
  const nearBottom = isNearBottom();
  const prev = lastRenderedMsg(r, m.seq);
  box.append(...messageEls(m, prev));
  if (nearBottom || m.sender === state.user) scrollToBottom();
}

export function lastRenderedMsg(r, before) {
  let best = null;
  for (const s of r.msgs.keys()) if (s < before && (!best || s > best.seq)) best = r.msgs.get(s);
  return best;
}

export function messageEls(m, prev) {
  const out = [];
  if (!prev || fmtDay(prev.ts) !== fmtDay(m.ts)) out.push(el("div", "day", fmtDay(m.ts)));
  if (m.kind === "system") {
    const s = el("div", "msg system", m.body);
    s.dataset.seq = m.seq;
    out.push(s);
    return out;
  }
  const cont = prev && out.length === 0 && prev.sender === m.sender && prev.kind !== "system" && m.ts - prev.ts < 5 * 60e3;
  out.push(bubble(m.sender, m.body, { seq: m.seq, ts: m.ts, bot: m.kind === "bot", cont, file: m.file }));
  return out;
}

export function bubble(sender, body, opts) {
  const d = el("div", "msg" + (opts.bot ? " bot" : "") + (opts.cont ? " cont" : "") + (opts.extra ? " " + opts.extra : ""));
  if (opts.seq !== undefined) d.dataset.seq = opts.seq;
  d.append(avatar(sender));
  const meta = el("div", "meta");
  meta.append(el("span", "sender", sender));
  if (opts.bot) meta.append(el("span", "tag", "bot"));
  meta.append(el("span", "time", opts.ts ? fmtTime(opts.ts) : opts.note || ""));
  d.append(meta);
  if (body || !opts.file) d.append(el("div", "body", body));
  if (opts.file) {
    d.classList.add("has-file");
    d.append(attachmentEl(opts.file));
  }
  return d;
}

export function renderMessages(keepScroll) {
  const box = $("messages");
  const r = state.rooms.get(state.active);
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  box.textContent = "";
  $("pending").textContent = "";
  if (!r) return;
  let prev = null;
  for (const m of sortedMsgs(r)) {
    box.append(...messageEls(m, prev));
    prev = m;
  }
  renderPending(r);
  renderUploads();
  renderLive(r);
  $("history-state").textContent = r.hasMore ? (r.loadingHistory ? "Loading earlier messages…" : "") : r.msgs.size ? "This is the beginning of the room." : "No messages yet. Say hello!";
  if (keepScroll) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else scrollToBottom();
}

export function renderPending(r) {
  for (const [clientId, m] of state.outbox) {
    if (m.room !== r.name || document.querySelector(`[data-client-id="${clientId}"]`)) continue;
    const b = bubble(state.user, m.body, { note: "sending…", extra: "pending" });
    b.dataset.clientId = clientId;
    $("pending").append(b);
  }
}

export function isNearBottom() {
  const s = $("scroller");
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

export function scrollToBottom() {
  const s = $("scroller");
  s.scrollTop = s.scrollHeight;
}

export function renderLive(r) {
  const live = $("live");
  live.textContent = "";
  for (const [id, s] of r.streams) {
    const b = bubble(s.bot, s.text, { bot: true, note: "typing…", extra: "live" });
    b.dataset.stream = id;
    live.append(b);
  }
}

export function renderTyping() {
  const r = state.rooms.get(state.active);
  const who = r ? [...r.typing.keys()] : [];
  $("typing").textContent = who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(", ")} and ${who.at(-1)} are typing…`;
}

export function renderMembers() {
  const r = state.rooms.get(state.active);
  const list = $("member-list");
  list.textContent = "";
  if (!r) return;
  const members = [...r.members.values()].sort((a, b) => (b.online - a.online) || a.user.localeCompare(b.user));
  for (const m of members) {
    const li = el("li");
    const a = avatar(m.user);
    a.append(el("span", "dot" + (m.online ? " on" : "")));
    li.append(a, el("span", "", m.user));
    if (m.role !== "member") li.append(el("span", "role", m.role));
    list.append(li);
  }
  $("invite-form").hidden = !(r.role === "admin" && r.kind !== "direct");
}

export function renderRooms() {
  const lists = { rooms: $("room-list"), dms: $("dm-list"), discover: $("discover-list") };
  for (const l of Object.values(lists)) l.textContent = "";
  const rooms = [...state.rooms.values()].sort((a, b) => displayName(a).localeCompare(displayName(b)));
  for (const r of rooms) {
    const li = el("li", r.name === state.active ? "active" : "");
    li.dataset.room = r.name;
    li.append(roomIcon(r.kind), el("span", "room-label", displayName(r)));
    if (!r.role) {
      const join = el("button", "join-btn", "Join");
      join.onclick = (ev) => {
        ev.stopPropagation();
        joinRoom(r.name);
      };
      li.append(join);
      li.onclick = () => joinRoom(r.name);
      lists.discover.append(li);
      continue;
    }
    if (r.mentions > 0 && r.name !== state.active) {
      const at = el("span", "badge mention", "@");
      at.title = `${r.mentions} mention${r.mentions > 1 ? "s" : ""}`;
      li.append(at);
    }
    if (r.unread > 0 && r.name !== state.active) {
      li.classList.add("unread");
      li.append(el("span", "badge", r.unread > 99 ? "99+" : String(r.unread)));
    }
    li.onclick = () => openRoom(r.name);
    (r.kind === "direct" ? lists.dms : lists.rooms).append(li);
  }
  $("discover-section").hidden = !lists.discover.childElementCount;
  const total = rooms.reduce((n, r) => n + (r.role && r.name !== state.active ? r.unread : 0), 0);
  document.title = total ? `(${total}) Chat` : "Chat";
}

export function renderPane() {
  const r = state.rooms.get(state.active);
  $("empty").hidden = !!r;
  $("composer").hidden = !r;
  $("toggle-members").hidden = !r;
  $("leave-room").hidden = !r || r.kind === "direct";
  $("chips").textContent = "";
  if (!r) {
    $("room-name").textContent = "Welcome";
    $("room-topic").textContent = state.user ? `Logged in as ${state.user}` : "";
    $("messages").textContent = "";
    $("pending").textContent = "";
    $("live").textContent = "";
    $("uploads").textContent = "";
    $("history-state").textContent = "";
    $("members").hidden = true;
    $("composer-note").hidden = true;
    return;
  }
  $("room-name").replaceChildren(roomIcon(r.kind), document.createTextNode(displayName(r)));
  $("room-topic").textContent = r.topic || { public: "Public room", private: "Private room", direct: "Direct messages", announcement: "Announcements", bot: "Bot room" }[r.kind] || "";
  const readOnly = r.kind === "announcement" && r.role === "member";
  $("composer").hidden = readOnly;
  $("composer-note").hidden = !readOnly;
  $("composer-note").textContent = "Only admins post in announcement rooms.";
  $("input").placeholder = `Message ${r.kind === "direct" ? "@" + displayName(r) : "#" + r.name}  ·  /ask a question  ·  /summarize`;
  $("members").hidden = !state.showMembers;
  renderMessages(false);
  renderTyping();
  renderMembers();
  renderFiles();
}

export function renderChips(replies) {
  const box = $("chips");
  const near = isNearBottom();
  box.textContent = "";
  for (const text of replies) {
    const c = el("button", "chip", text);
    c.type = "button";
    c.onclick = () => {
      $("input").value = text;
      box.textContent = "";
      $("input").focus();
      autosize();
    };
    box.append(c);
  }
  // The chips take room from the message list: keep the newest in view.
  if (near) scrollToBottom();
}

export function showBanner(text) {
  $("banner").textContent = text;
  $("banner").hidden = false;
}

export function hideBanner() {
  $("banner").hidden = true;
}

export function setConnState(text) {
  const s = $("conn-state");
  s.textContent = text;
  s.classList.toggle("online", text === "online");
}

export function autosize() {
  const t = $("input");
  t.style.height = "auto";
  t.style.height = Math.min(t.scrollHeight + 2, 180) + "px";
}
