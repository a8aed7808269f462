// Files: uploads over HTTP with progress, attachments in messages (image
// previews and file chips), the image viewer and a room's file list.
//
// Files are fetched with the Authorization header and shown through blob:
// URLs; the token never goes into a URL.

import { $, el, fmtSize, randomId, svgIcon, toast } from "./util.js";
import { state } from "./state.js";
import { scrollToBottom } from "./view.js";

const auth = () => ({ authorization: "Bearer " + state.token });

/** Loads whether file sharing is on, and its limits. */
export async function loadLimits() {
  try {
    const res = await fetch("/api/files", { headers: auth() });
    state.fileLimits = res.ok ? await res.json() : { enabled: false };
  } catch {
    state.fileLimits = { enabled: false };
  }
  const on = !!state.fileLimits.enabled;
  $("attach").hidden = !on;
  if (on && state.fileLimits.extensions) {
    $("file-input").accept = state.fileLimits.extensions.map((e) => "." + e).join(",");
  }
}

/** Why this file cannot be shared, or null. */
function refusal(file) {
  const l = state.fileLimits;
  if (!l || !l.enabled) return "file sharing is off on this server";
  if (file.size === 0) return "the file is empty";
  if (file.size > l.max_file_bytes) return `files are at most ${fmtSize(l.max_file_bytes)}`;
  const ext = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  if (l.extensions && !l.extensions.includes(ext)) return `allowed: ${l.extensions.join(", ")}`;
  return null;
}

/**
 * Uploads files to a room, each as its own message; the composer's text,
 * if any, becomes the first one's caption.
 */
export function uploadFiles(roomName, files, caption) {
  for (const file of files) {
    const why = refusal(file);
    if (why) {
      toast(`Cannot share ${file.name}: ${why}`, "error");
      continue;
    }
    upload(roomName, file, caption || "");
    caption = "";
  }
}

function upload(roomName, file, caption) {
  const clientId = randomId();
  const q = new URLSearchParams({ name: file.name, client_id: clientId });
  if (caption) q.set("body", caption);
  const xhr = new XMLHttpRequest();
  const u = { room: roomName, name: file.name, size: file.size, loaded: 0, xhr };
  state.uploads.set(clientId, u);
  xhr.open("POST", `/api/rooms/${encodeURIComponent(roomName)}/files?${q}`);
  xhr.setRequestHeader("authorization", "Bearer " + state.token);
  xhr.upload.onprogress = (ev) => {
    u.loaded = ev.loaded;
    renderUploads();
  };
  const done = () => {
    state.uploads.delete(clientId);
    renderUploads();
  };
  xhr.onload = () => {
    done();
    if (xhr.status >= 300) {
      let message = xhr.statusText;
      try {
        message = JSON.parse(xhr.responseText).error.message;
      } catch {
        /* not JSON */
      }
      toast(`Cannot share ${file.name}: ${message}`, "error");
    }
  };
  xhr.onerror = () => {
    done();
    toast(`Upload of ${file.name} failed (connection lost)`, "error");
  };
  xhr.onabort = done;
  xhr.send(file);
  renderUploads();
  if (roomName === state.active) scrollToBottom();
}

/** Progress rows of the active room's uploads. */
export function renderUploads() {
  const box = $("uploads");
  box.textContent = "";
  for (const u of state.uploads.values()) {
    if (u.room !== state.active) continue;
    const row = el("div", "upload");
    const pct = u.size ? Math.min(100, Math.round((u.loaded / u.size) * 100)) : 0;
    const bar = el("div", "bar");
    bar.append(el("span"));
    bar.firstChild.style.width = pct + "%";
    const cancel = el("button", "icon-btn", "×");
    cancel.type = "button";
    cancel.title = "Cancel the upload";
    cancel.onclick = () => u.xhr.abort();
    row.append(svgIcon("file", 18), el("span", "upload-name", u.name), bar, el("span", "muted small", `${pct}%`), cancel);
    box.append(row);
  }
}

// Blob URLs of fetched files, by id; the oldest are released past the cap.
const blobs = new Map();
const MAX_BLOBS = 100;

/** A blob: URL with the file's content (fetched once). */
export function blobUrl(file) {
  let p = blobs.get(file.id);
  if (!p) {
    p = fetch(`/api/files/${encodeURIComponent(file.id)}`, { headers: auth() }).then(async (res) => {
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      return URL.createObjectURL(await res.blob());
    });
    p.catch(() => blobs.delete(file.id));
    blobs.set(file.id, p);
    if (blobs.size > MAX_BLOBS) {
      const [oldest, q] = blobs.entries().next().value;
      blobs.delete(oldest);
      q.then((url) => URL.revokeObjectURL(url), () => {});
    }
  }
  return p;
}

/** Saves a file to the user's downloads. */
export async function download(file) {
  try {
    const a = el("a");
    a.href = await blobUrl(file);
    a.download = file.name;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    toast(`Cannot download ${file.name}: ${e.message}`, "error");
  }
}

const isImage = (f) => /^image\/(png|jpeg|gif|webp)$/.test(f.mime);

/** What a message's file looks like: an image preview, else a chip. */
export function attachmentEl(file) {
  if (isImage(file)) {
    const b = el("button", "attachment image");
    b.type = "button";
    b.title = `${file.name} (${fmtSize(file.size)})`;
    const img = el("img", "attachment-img");
    img.alt = file.name;
    img.onload = () => {
      // Keep the newest message in view when the picture pushes it down.
      const s = $("scroller");
      if (s.scrollHeight - img.offsetHeight - s.scrollTop - s.clientHeight < 120) scrollToBottom();
    };
    blobUrl(file).then((url) => (img.src = url), () => b.classList.add("broken"));
    b.append(img);
    b.onclick = () => openViewer(file);
    return b;
  }
  const chip = el("div", "attachment file-chip");
  const ext = file.name.includes(".") ? file.name.split(".").pop().toUpperCase().slice(0, 4) : "FILE";
  const meta = el("div", "file-meta");
  const name = el("button", "file-name", file.name);
  name.type = "button";
  name.onclick = () => download(file);
  meta.append(name, el("span", "muted small", `${fmtSize(file.size)} · ${ext}`));
  const dl = el("button", "icon-btn file-dl");
  dl.type = "button";
  dl.title = `Download ${file.name}`;
  dl.setAttribute("aria-label", dl.title);
  dl.append(svgIcon("download", 18));
  dl.onclick = () => download(file);
  chip.append(el("span", "file-badge", ext), meta, dl);
  return chip;
}

/** Shows an image full size, with a download button. */
export async function openViewer(file) {
  const d = $("viewer");
  $("viewer-name").textContent = `${file.name} · ${fmtSize(file.size)}`;
  $("viewer-download").onclick = () => download(file);
  $("viewer-img").removeAttribute("src");
  $("viewer-img").alt = file.name;
  d.showModal();
  try {
    $("viewer-img").src = await blobUrl(file);
  } catch (e) {
    toast(`Cannot open ${file.name}: ${e.message}`, "error");
  }
}

/** The active room's files, newest first, in the side panel. */
export function renderFiles() {
  const r = state.rooms.get(state.active);
  const list = $("file-list");
  list.textContent = "";
  const files = r ? r.files : [];
  $("files-empty").hidden = files.length > 0 || !r || !r.filesLoaded;
  for (const f of files.slice(0, 50)) {
    const li = el("li");
    li.title = `${f.file.name} · shared by ${f.uploader}`;
    const open = el("button", "file-row");
    open.type = "button";
    open.append(svgIcon(isImage(f.file) ? "image" : "file", 16), el("span", "file-row-name", f.file.name), el("span", "muted small", fmtSize(f.file.size)));
    open.onclick = () => (isImage(f.file) ? openViewer(f.file) : download(f.file));
    li.append(open);
    list.append(li);
  }
}

/** Records a file shared in a room (from a live message). */
export function noteFile(r, m) {
  if (!m.file || r.files.some((f) => f.file.id === m.file.id)) return;
  r.files.unshift({ file: m.file, uploader: m.sender, created_at: m.ts });
  if (r.name === state.active) renderFiles();
}

/** Wires the attach button, drag and drop onto the message pane, paste and the viewer. */
export function initFiles(currentRoom) {
  const input = $("file-input");
  const take = (files) => {
    const r = currentRoom();
    if (!r || !files.length) return;
    const caption = $("input").value.trim();
    $("input").value = "";
    uploadFiles(r.name, [...files], caption);
  };
  $("attach").onclick = () => input.click();
  input.onchange = () => {
    take(input.files);
    input.value = "";
  };
  const pane = document.querySelector(".pane");
  let depth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes("Files");
  pane.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev) || !currentRoom() || !state.fileLimits?.enabled) return;
    depth++;
    $("drop-zone").textContent = `Drop to share in ${currentRoom().kind === "direct" ? "this conversation" : "#" + currentRoom().name}`;
    $("drop-zone").hidden = false;
  });
  pane.addEventListener("dragover", (ev) => {
    if (hasFiles(ev) && currentRoom()) ev.preventDefault();
  });
  pane.addEventListener("dragleave", () => {
    if (depth > 0 && --depth === 0) $("drop-zone").hidden = true;
  });
  pane.addEventListener("drop", (ev) => {
    depth = 0;
    $("drop-zone").hidden = true;
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    take(ev.dataTransfer.files);
  });
  $("input").addEventListener("paste", (ev) => {
    const files = ev.clipboardData ? [...ev.clipboardData.files] : [];
    if (files.length) {
      ev.preventDefault();
      take(files);
    }
  });
  $("viewer").querySelector("[data-close]").onclick = () => $("viewer").close();
  $("viewer").addEventListener("click", (ev) => {
    if (ev.target === $("viewer")) $("viewer").close();
  });
}
