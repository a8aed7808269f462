// Mention notifications: a toast in the page, and a desktop notification
// when the tab is hidden and the user turned them on with the bell (the
// permission is asked on that click, never unprompted).

import { $, toast } from "./util.js";
import { NOTIFY_KEY, state, displayName } from "./state.js";
import { renderRooms } from "./view.js";

const supported = () => "Notification" in window;

function enabled() {
  return supported() && Notification.permission === "granted" && localStorage.getItem(NOTIFY_KEY) === "on";
}

export function renderBell() {
  const b = $("notify-toggle");
  const on = enabled();
  b.classList.toggle("on", on);
  b.setAttribute("aria-pressed", String(on));
  b.title = on ? "Desktop notifications are on (click to turn off)" : "Turn on desktop notifications for mentions";
}

/** The bell: asks for permission the first time, then toggles. */
export async function toggleBell() {
  if (!supported()) {
    toast("This browser cannot show notifications", "error");
    return;
  }
  if (enabled()) {
    localStorage.setItem(NOTIFY_KEY, "off");
  } else {
    const p = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    if (p === "granted") {
      localStorage.setItem(NOTIFY_KEY, "on");
      toast("You will be notified of mentions while this tab is in the background");
    } else {
      toast("Notifications are blocked for this site in the browser's settings", "error");
    }
  }
  renderBell();
}

/** A `mention` frame: someone wrote @me. */
export function onMention(f, openRoom) {
  const r = state.rooms.get(f.room);
  const where = r ? (r.kind === "direct" ? `a message to you` : `#${displayName(r)}`) : f.room;
  const hidden = document.visibilityState === "hidden";
  if (f.room !== state.active || hidden) {
    toast(`${f.from} mentioned you in ${where}: ${f.excerpt}`, "mention", () => openRoom(f.room));
    if (r && f.room !== state.active) {
      r.mentions += 1;
      renderRooms();
    }
  }
  if (hidden && enabled()) {
    const n = new Notification(`${f.from} mentioned you in ${where}`, {
      body: f.excerpt,
      tag: `mention:${f.room}:${f.seq}`,
      icon: "/icon.svg",
    });
    n.onclick = () => {
      window.focus();
      openRoom(f.room);
      n.close();
    };
  }
}
