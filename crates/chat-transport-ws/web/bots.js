// Bots: live bubbles for streamed replies (replaced by the stored message
// when it arrives), /ask and /summarize, and smart replies, which stream to
// the asker alone (bot_delta with private: true) and end as chips.

import { $, el, toast } from "./util.js";
import { state, room } from "./state.js";
import { isNearBottom, renderChips, renderLive, scrollToBottom } from "./view.js";
import { call } from "./app.js";

export function onBotDelta(f) {
  if (f.private) {
    // Smart replies stream to the asker alone; they become chips when
    // `suggestions` arrives. Only bot_done needs to know the stream.
    state.privateStreams.add(f.stream);
    return;
  }
  const r = room(f.room);
  let s = r.streams.get(f.stream);
  if (!s) {
    s = { bot: f.bot, text: "" };
    r.streams.set(f.stream, s);
  }
  s.text += f.delta;
  if (f.room === state.active) {
    const near = isNearBottom();
    renderLive(r);
    if (near) scrollToBottom();
  }
}

export function onBotDone(f) {
  if (state.privateStreams.delete(f.stream)) return;
  const r = room(f.room);
  if (!r.streams.has(f.stream)) return;
  if (f.seq && !r.msgs.has(f.seq)) {
    // The stored reply replaces the live bubble when it arrives.
    r.replaceOnSeq.set(f.seq, f.stream);
    return;
  }
  dropStream(r, f.stream);
}

export function dropStream(r, stream) {
  r.streams.delete(stream);
  if (r.name === state.active) renderLive(r);
}

export async function ask(r, task) {
  try {
    await call({ type: "ask", room: r.name, ...task });
  } catch (e) {
    toast(`The bot cannot answer: ${e.message}`, true);
  }
}

export async function suggest() {
  const r = state.rooms.get(state.active);
  if (!r) return;
  const near = isNearBottom();
  $("chips").textContent = "";
  $("chips").append(el("span", "muted small", "Thinking of replies…"));
  if (near) scrollToBottom();
  try {
    const reply = await call({ type: "ask", room: r.name, task: "smart_replies" });
    if (reply.type === "suggestions") renderChips(reply.replies);
  } catch (e) {
    $("chips").textContent = "";
    toast(`No suggestions: ${e.message}`, true);
  }
}
