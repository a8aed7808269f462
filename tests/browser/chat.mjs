// Browser test of the chat web client, driven by
// crates/chat-transport-ws/tests/browser.rs (which starts the server).
//
// Run with: node tests/browser/chat.mjs http://127.0.0.1:PORT/ [screenshot.png]
//
// Two users in two isolated browser contexts (separate localStorage) chat in
// one room, a bot reply streams in, and both a dropped socket and a page
// reload resume without losing or duplicating a message. Files are shared
// through the attach button and by drag and drop, a mention notifies the
// other user, and the token is renewed. Uses Debian's Chromium through
// playwright-core (no browser download); Playwright gives the browser a
// fresh temporary --user-data-dir of its own.
import { readFileSync } from "node:fs";
import zlib from "node:zlib";
import { chromium } from "playwright-core";

const url = process.argv[2];
const screenshot = process.argv[3];
if (!url) {
  console.error("usage: node chat.mjs <url> [screenshot.png]");
  process.exit(2);
}

const STEP = 15000;
// A real PNG (a sunset, 240x160), so that the page decodes and shows it.
const CRC = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngChunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
function sunsetPng(w, h) {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    const row = y * (w * 3 + 1);
    for (let x = 0; x < w; x++) {
      const t = y / h;
      let px = [255 - 90 * t, 140 - 60 * t, 90 + 80 * t]; // sky
      const dx = x - w * 0.5, dy = y - h * 0.62;
      if (dx * dx + dy * dy < (h * 0.2) ** 2) px = [255, 214, 90]; // sun
      if (y > h * 0.62) px = [40 + 30 * Math.sin(x / 7 + y), 70, 140 + 20 * t]; // sea
      raw.set(px.map((v) => Math.max(0, Math.min(255, Math.round(v)))), row + 1 + x * 3);
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", zlib.deflateSync(raw)),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}
const PNG = sunsetPng(240, 160);
const PDF = Buffer.from(`%PDF-1.4\n% release plan\n${"1 0 obj << /Type /Catalog >> endobj\n".repeat(120)}%%EOF\n`);

let passed = 0;
let failed = 0;

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
    // Pictures of both pages for the post-mortem.
    for (const [who, page] of [["alice", alice], ["bob", bob]]) {
      if (page) await page.screenshot({ path: `${process.env.TMPDIR || "/tmp"}/chat-fail-${who}.png` }).catch(() => {});
    }
    throw e;
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

async function newUser(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  // Desktop notifications are recorded, not shown: headless Chromium has no
  // notification centre to look at.
  await context.addInitScript(() => {
    window.__notes = [];
    window.Notification = class {
      constructor(title, opts) {
        window.__notes.push({ title, body: opts && opts.body });
      }
      close() {}
      static get permission() {
        return localStorage.getItem("test.notify.permission") || "default";
      }
      static requestPermission() {
        localStorage.setItem("test.notify.permission", "granted");
        return Promise.resolve("granted");
      }
    };
  });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e}`));
  page.on("console", (m) => {
    if (m.type() === "error") console.log(`[${name}] console: ${m.text()}`);
  });
  await page.goto(url);
  await page.click("#tab-signup");
  await page.fill("#auth-user", name);
  await page.fill("#auth-pass", "correct horse battery");
  await page.click("#auth-submit");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector("#conn-state.online");
  return page;
}

async function say(page, text) {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

/** Bodies and seqs of the stored messages shown, in order. */
async function shown(page) {
  return page.$$eval("#messages .msg[data-seq]", (els) =>
    els.map((e) => ({ seq: Number(e.dataset.seq), body: e.querySelector(".body")?.textContent })),
  );
}

async function waitForBody(page, body) {
  await page.waitForFunction(
    (b) => [...document.querySelectorAll("#messages .msg .body")].some((e) => e.textContent === b),
    body,
  );
}

/** Every seq from 1 to the newest, once each, in order. */
async function assertContiguous(page, who) {
  const msgs = await shown(page);
  const seqs = msgs.map((m) => m.seq);
  const expected = Array.from({ length: seqs.length }, (_, i) => i + 1);
  assert(JSON.stringify(seqs) === JSON.stringify(expected), `${who} shows seqs ${seqs}, expected ${expected}`);
  return msgs;
}

let alice, bob;
try {
  await step("alice and bob sign up", async () => {
    alice = await newUser("alice");
    bob = await newUser("bob");
  });

  await step("alice creates a public room", async () => {
    await alice.click("#new-room");
    await alice.fill("#room-new-name", "lobby");
    await alice.fill("#room-new-topic", "Say hello to everyone");
    await alice.click("#room-form button[type=submit]");
    await alice.waitForSelector("#room-list li.active[data-room=lobby]");
  });

  await step("bob finds the room under Discover and joins", async () => {
    // The room list refreshes on its own; a reload makes it immediate.
    await bob.reload();
    await bob.waitForSelector("#discover-list li[data-room=lobby] .join-btn");
    await bob.click("#discover-list li[data-room=lobby] .join-btn");
    await bob.waitForSelector("#room-list li.active[data-room=lobby]");
  });

  await step("each sees the other's messages", async () => {
    await say(alice, "Hi Bob! Welcome to the lobby.");
    await waitForBody(bob, "Hi Bob! Welcome to the lobby.");
    await say(bob, "Hey Alice, glad to be here.");
    await waitForBody(alice, "Hey Alice, glad to be here.");
    await bob.waitForSelector("#member-list li:has-text('alice') .dot.on");
  });

  await step("typing indicator shows", async () => {
    // The server passes on one typing event a second per connection.
    await bob.type("#input", "typing a reply", { delay: 150 });
    await alice.waitForFunction(() => document.querySelector("#typing").textContent.includes("bob is typing"));
    await bob.fill("#input", "");
  });

  await step("a bot reply streams in, then is replaced by the stored message", async () => {
    await say(alice, "/ask how does streaming work?");
    const final = "Streaming an answer to: how does streaming work?";
    // Watch the live bubble grow in several steps on bob's side.
    const seen = await bob.evaluate(
      (final) =>
        new Promise((resolve, reject) => {
          const texts = new Set();
          const timer = setTimeout(() => reject(new Error(`no stored reply; saw ${[...texts]}`)), 15000);
          const tick = () => {
            const live = document.querySelector("#live .msg.live .body");
            if (live) texts.add(live.textContent);
            const stored = [...document.querySelectorAll("#messages .msg.bot .body")].some((e) => e.textContent === final);
            if (stored && !document.querySelector("#live .msg")) {
              clearTimeout(timer);
              resolve([...texts]);
            } else requestAnimationFrame(tick);
          };
          tick();
        }),
      final,
    );
    assert(seen.length >= 2, `live bubble grew in ${seen.length} step(s): ${JSON.stringify(seen)}`);
    assert(seen.every((t) => final.startsWith(t)), `partial texts ${JSON.stringify(seen)}`);
    await waitForBody(alice, final);
  });

  await step("a dropped connection resumes without loss or duplicates", async () => {
    await bob.evaluate(() => window.chatDebug.dropConnection());
    await bob.waitForSelector("#conn-state:not(.online)");
    for (let i = 1; i <= 3; i++) await say(alice, `While you were away ${i}`);
    await waitForBody(alice, "While you were away 3");
    await bob.waitForSelector("#conn-state.online");
    await waitForBody(bob, "While you were away 3");
    const a = await assertContiguous(alice, "alice");
    const b = await assertContiguous(bob, "bob");
    assert(JSON.stringify(a) === JSON.stringify(b), "alice and bob show different messages");
  });

  await step("messages sent while offline are delivered once", async () => {
    await bob.evaluate(() => window.chatDebug.dropConnection());
    await bob.waitForSelector("#conn-state:not(.online)");
    await say(bob, "Sent while offline");
    await bob.waitForSelector("#pending .msg.pending");
    await waitForBody(alice, "Sent while offline");
    await bob.waitForSelector("#conn-state.online");
    await waitForBody(bob, "Sent while offline");
    await bob.waitForFunction(() => !document.querySelector("#pending .msg"));
    await assertContiguous(alice, "alice");
    await assertContiguous(bob, "bob");
  });

  await step("a reload resumes from the stored token and history", async () => {
    const reload = bob.reload();
    await say(alice, "Posted during the reload");
    await reload;
    await bob.waitForSelector("#conn-state.online");
    await waitForBody(bob, "Posted during the reload");
    const a = await assertContiguous(alice, "alice");
    const b = await assertContiguous(bob, "bob");
    assert(JSON.stringify(a) === JSON.stringify(b), "alice and bob show different messages after reload");
  });

  await step("smart reply chips fill the composer", async () => {
    await say(bob, "Shall we meet at noon to plan the release?");
    await waitForBody(alice, "Shall we meet at noon to plan the release?");
    await alice.click("#suggest");
    await alice.waitForSelector("#chips .chip");
    const chip = await alice.textContent("#chips .chip");
    assert(chip && chip.length > 0, "empty chip");
    await alice.click("#chips .chip");
    assert((await alice.inputValue("#input")) === chip, "chip did not fill the composer");
    await alice.fill("#input", "");
    assert(!(await alice.$("#live .msg")), "private smart-reply stream leaked into the room");
  });

  await step("unread counts and direct messages", async () => {
    await alice.click("#new-dm");
    await alice.fill("#dm-user", "bob");
    await alice.click("#dm-form button[type=submit]");
    await alice.waitForSelector("#dm-list li.active");
    await say(alice, "Psst, a private word.");
    // No reload: bob is told of the new direct room at once.
    await bob.waitForSelector("#dm-list li.unread .badge", { timeout: 5000 });
    await bob.click("#dm-list li");
    await waitForBody(bob, "Psst, a private word.");
  });

  await step("/summarize streams a summary from the bot", async () => {
    await alice.click("#room-list li[data-room=lobby]");
    await say(alice, "/summarize 20");
    await alice.waitForFunction(() =>
      [...document.querySelectorAll("#messages .msg.bot .body")].some((e) => e.textContent.startsWith("Summary: ")),
    );
  });

  await step("scrolling up loads older history until the beginning", async () => {
    // 130 messages posted through the REST API with alice's token.
    await alice.evaluate(async () => {
      const headers = { authorization: "Bearer " + localStorage.getItem("chat.token"), "content-type": "application/json" };
      const create = await fetch("/api/rooms", { method: "POST", headers, body: JSON.stringify({ room: "archive", topic: "Old news" }) });
      if (create.status !== 201) throw new Error(`create: ${create.status}`);
      for (let i = 1; i <= 130; i++) {
        const r = await fetch("/api/rooms/archive/messages", { method: "POST", headers, body: JSON.stringify({ body: `Archived note ${i}` }) });
        if (r.status !== 201) throw new Error(`post ${i}: ${r.status}`);
      }
    });
    await alice.reload();
    await alice.waitForSelector("#conn-state.online");
    await alice.click("#room-list li[data-room=archive]");
    await waitForBody(alice, "Archived note 130");
    const firstPage = (await shown(alice)).length;
    assert(firstPage < 130, `the first page already holds ${firstPage} messages`);
    const beginning = "This is the beginning of the room.";
    for (let i = 0; i < 20 && (await alice.textContent("#history-state")) !== beginning; i++) {
      const before = (await shown(alice)).length;
      await alice.evaluate(() => {
        document.getElementById("scroller").scrollTop = 0;
      });
      // Each scroll to the top loads one more page.
      await alice.waitForFunction(
        ([n, text]) =>
          document.querySelectorAll("#messages .msg[data-seq]").length > n ||
          document.getElementById("history-state").textContent === text,
        [before, beginning],
      );
    }
    const msgs = await assertContiguous(alice, "alice in archive");
    assert(msgs.length === 130, `loaded ${msgs.length} of 130`);
    assert(msgs[0].body === "Archived note 1", `first is ${msgs[0].body}`);
  });

  await step("files shared by attach button and drag and drop reach the other user", async () => {
    await alice.click("#room-list li[data-room=lobby]");
    await bob.click("#room-list li[data-room=lobby]");
    await alice.waitForSelector("#attach:not([hidden])");
    const [chooser] = await Promise.all([alice.waitForEvent("filechooser"), alice.click("#attach")]);
    await chooser.setFiles({ name: "sunset.png", mimeType: "image/png", buffer: PNG });
    // Bob's page fetches the picture and decodes it.
    await bob.waitForFunction(() => {
      const img = document.querySelector("#messages .msg .attachment-img");
      return img && img.complete && img.naturalWidth === 240 && img.src.startsWith("blob:");
    });
    // A PDF dropped onto alice's message pane, with the composer's text as caption.
    await alice.fill("#input", "Here is the release plan");
    await alice.evaluate((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], "release-plan.pdf", { type: "application/pdf" }));
      const pane = document.querySelector(".pane");
      for (const type of ["dragenter", "dragover", "drop"]) {
        pane.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    }, [...PDF]);
    await bob.waitForSelector("#messages .file-chip .file-name:has-text('release-plan.pdf')");
    await waitForBody(bob, "Here is the release plan");
    await alice.waitForFunction(() => !document.querySelector("#uploads .upload"));
    const [dl] = await Promise.all([bob.waitForEvent("download"), bob.click("#messages .file-chip .file-dl")]);
    assert(dl.suggestedFilename() === "release-plan.pdf", `download named ${dl.suggestedFilename()}`);
    assert(readFileSync(await dl.path()).equals(PDF), "downloaded PDF differs");
    // The room's files are listed in the side panel, newest first.
    await bob.waitForFunction(() =>
      [...document.querySelectorAll("#file-list .file-row-name")].map((e) => e.textContent).join() === "release-plan.pdf,sunset.png",
    );
    // A click on the picture opens the viewer.
    await bob.click("#messages .attachment.image");
    await bob.waitForSelector("#viewer[open] #viewer-img[src^='blob:']");
    await bob.click("#viewer [data-close]");
    // A disallowed file is refused before it is sent.
    await alice.setInputFiles("#file-input", { name: "tool.exe", mimeType: "application/octet-stream", buffer: Buffer.from("MZ...") });
    await alice.waitForSelector(".toast.error:has-text('tool.exe')");
  });

  await step("a mention shows a toast and a desktop notification while the tab is hidden", async () => {
    await bob.click("#notify-toggle");
    await bob.waitForSelector("#notify-toggle.on");
    await bob.click("#dm-list li");
    await bob.evaluate(() => {
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    });
    await say(alice, "@bob can you review the plan before noon?");
    await bob.waitForSelector(".toast.mention:has-text('alice mentioned you in #lobby')");
    await bob.waitForSelector("#room-list li[data-room=lobby] .badge.mention");
    const notes = await bob.evaluate(() => window.__notes);
    assert(notes.length === 1 && notes[0].title === "alice mentioned you in #lobby", JSON.stringify(notes));
    assert(notes[0].body.startsWith("@bob can you review"), JSON.stringify(notes));
    await bob.evaluate(() => delete document.visibilityState);
    // The toast leads to the message.
    await bob.click(".toast.mention");
    await bob.waitForSelector("#room-list li.active[data-room=lobby]");
    await waitForBody(bob, "@bob can you review the plan before noon?");
  });

  await step("the token is renewed and the old one revoked", async () => {
    const old = await bob.evaluate(() => localStorage.getItem("chat.token"));
    const fresh = await bob.evaluate(() => window.chatDebug.refreshToken());
    assert(fresh && fresh !== old, "no fresh token");
    assert((await bob.evaluate(() => localStorage.getItem("chat.token"))) === fresh, "fresh token not stored");
    const status = (t) => bob.evaluate(async (t) => (await fetch("/api/session", { headers: { authorization: "Bearer " + t } })).status, t);
    for (let i = 0; i < 100 && (await status(old)) !== 401; i++) await bob.waitForTimeout(50);
    assert((await status(old)) === 401, "old token still valid");
    assert((await status(fresh)) === 200, "fresh token refused");
    await bob.reload();
    await bob.waitForSelector("#conn-state.online");
  });

  if (screenshot) {
    await step("screenshot", async () => {
      // A few more rooms, so that the picture shows a lived-in sidebar.
      await alice.click("#new-room");
      await alice.fill("#room-new-name", "design-team");
      await alice.selectOption("#room-new-kind", "private");
      await alice.fill("#room-new-topic", "Mockups and reviews");
      await alice.click("#room-form button[type=submit]");
      await alice.waitForSelector("#room-list li.active[data-room=design-team]");
      await bob.click("#new-room");
      await bob.fill("#room-new-name", "random");
      await bob.click("#room-form button[type=submit]");
      await bob.waitForSelector("#room-list li.active[data-room=random]");
      await say(bob, "Anyone up for lunch?");
      await bob.click("#dm-list li");
      await say(bob, "Got it, thanks!");
      await alice.reload();
      await alice.waitForSelector("#conn-state.online");
      await alice.waitForSelector("#discover-list li[data-room=random]");
      await alice.waitForSelector("#dm-list li.unread .badge");
      await alice.click("#room-list li[data-room=lobby]");
      await bob.click("#room-list li[data-room=lobby]");
      await waitForBody(alice, "Shall we meet at noon to plan the release?");
      await say(bob, "Sounds good, see you at noon!");
      await waitForBody(alice, "Sounds good, see you at noon!");
      await alice.click("#suggest");
      await alice.waitForSelector("#chips .chip");
      await alice.screenshot({ path: screenshot });
    });
  }
} catch {
  // Reported by step().
} finally {
  await browser.close();
}

console.log(`browser steps ok: ${passed}, failing: ${failed}`);
process.exit(failed ? 1 : 0);
