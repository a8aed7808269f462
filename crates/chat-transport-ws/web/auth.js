// Logging in, signing up and out.

import { $, avatar } from "./util.js";
import { TOKEN_KEY, state } from "./state.js";
import { renderPane } from "./view.js";
import { connect, send } from "./app.js";

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
    state.token = body.token;
    state.user = body.user;
    localStorage.setItem(TOKEN_KEY, body.token);
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
  if (state.ws) state.ws.close(1000);
  state.ws = null;
  state.token = null;
  state.rooms.clear();
  state.outbox.clear();
  state.active = null;
  localStorage.removeItem(TOKEN_KEY);
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
