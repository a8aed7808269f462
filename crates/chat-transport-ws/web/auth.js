// Logging in, signing up and out, and renewing the token.

import { $, avatar } from "./util.js";
import { ISSUED_KEY, TOKEN_KEY, setToken, state } from "./state.js";
import { renderPane } from "./view.js";
import { call, connect, send } from "./app.js";

export let signupMode = false;

export function setMode(signup) {
  signupMode = signup;
  $("tab-login").classList.toggle("active", !signup);
  $("tab-signup").classList.toggle("active", signup);
  $("tab-login").setAttribute("aria-selected", String(!signup));
  $("tab-signup").setAttribute("aria-selected", String(signup));
  $("auth-submit").textContent = signup ? "Create account" : "Log in";
  $("auth-pass").autocomplete = signup ? "new-password" : "current-password";
  $("auth-error").textContent = "";
}

export async function authSubmit(ev) {
  ev.preventDefault();
  const username = $("auth-user").value.trim();
  const password = $("auth-pass").value;
  $("auth-submit").disabled = true;
  $("auth-error").textContent = "";
  try {
    const res = await fetch(signupMode ? "/api/signup" : "/api/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    setToken(body.token, body.expires_at);
    state.user = body.user;
    $("auth-pass").value = "";
    start();
  } catch (e) {
    $("auth-error").textContent = e.message;
  } finally {
    $("auth-submit").disabled = false;
  }
}

export function start() {
  state.stopped = false;
  state.backoff = 500;
  showApp();
  renderPane();
  connect();
}

export function logout(tellServer) {
  if (tellServer) send({ type: "logout" });
  state.stopped = true;
  clearTimeout(state.retryTimer);
  clearInterval(state.refreshTimer);
  clearTimeout(state.tokenTimer);
  for (const u of state.uploads.values()) u.xhr.abort();
  if (state.ws) state.ws.close(1000);
  state.ws = null;
  state.token = null;
  state.rooms.clear();
  state.outbox.clear();
  state.active = null;
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(ISSUED_KEY);
  showAuth("");
}

export function showAuth(message) {
  $("app").hidden = true;
  $("auth").hidden = false;
  $("auth-error").textContent = message;
  $("auth-user").focus();
}

export function showApp() {
  $("auth").hidden = true;
  $("app").hidden = false;
  if (state.user) {
    $("me-name").textContent = state.user;
    $("me-avatar").replaceWith(Object.assign(avatar(state.user), { id: "me-avatar" }));
  }
}

/**
 * Renews the token at half its life (from when it was issued), so that a
 * client in use never meets an expired token; the old one is revoked.
 */
export function scheduleTokenRefresh() {
  clearTimeout(state.tokenTimer);
  if (!state.expiresAt) return;
  let issued = Number(localStorage.getItem(ISSUED_KEY));
  if (!issued || issued > state.expiresAt) {
    issued = Date.now();
    localStorage.setItem(ISSUED_KEY, String(issued));
  }
  const at = issued + (state.expiresAt - issued) / 2;
  const delay = Math.min(Math.max(at - Date.now(), 0), 2 ** 31 - 1);
  state.tokenTimer = setTimeout(refreshToken, delay);
}

export async function refreshToken() {
  const old = state.token;
  let reply;
  try {
    reply = await call({ type: "refresh_token" });
  } catch {
    return; // tried again after the next connect
  }
  setToken(reply.token, reply.expires_at);
  scheduleTokenRefresh();
  fetch("/api/session", { method: "DELETE", headers: { authorization: "Bearer " + old } }).catch(() => {});
  return reply.token;
}
