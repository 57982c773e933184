/* Attendant chat widget. A store pastes one line into its pages (docs/widget.md):

     <script src="https://SUPPORT-HOST/widget.js" data-api-key="att.…" data-title="Chat with us" defer></script>

   Plain modern JS, no dependencies, no build step. Everything lives in a Shadow DOM, so the store's
   CSS does not reach in and ours does not leak out. Server and customer text is only ever put on
   the page with textContent (never innerHTML). The only thing stored is {conversation id, token}
   in sessionStorage (per page origin and tab), so a reload continues the conversation. */
(() => {
  "use strict";
  if (window.__attendantWidget) return; // pasted twice: one widget
  window.__attendantWidget = true;

  const script = document.currentScript ||
    document.querySelector('script[src$="widget.js"][data-api-key]') ||
    document.querySelector('script[src$="widget.js"]');
  if (!script) return;
  const opts = script.dataset;
  // The API lives next to widget.js on the support host (relative, so a path prefix keeps working).
  const API = new URL("api/v1/", script.src).href;
  const TITLE = opts.title || "Chat with us";
  const STORAGE = "attendant-widget:" + API; // one entry per support host on this page origin
  const money = new Intl.NumberFormat(undefined, { style: "currency", currency: opts.currency || "USD" });

  // ------------------------------------------------------------------ conversation state
  let conv = load(); // {id, token} or null
  let restored = false;
  let busy = false;

  function load() {
    try {
      const v = JSON.parse(sessionStorage.getItem(STORAGE) || "null");
      return v && typeof v.id === "string" && typeof v.token === "string" ? v : null;
    } catch (_) { return null; } // storage disabled or garbage: start fresh
  }
  function save(v) {
    conv = v;
    try { v ? sessionStorage.setItem(STORAGE, JSON.stringify(v)) : sessionStorage.removeItem(STORAGE); } catch (_) {}
  }

  // One API call: {status, ok, data, retryAfter}; a network or CORS failure throws (TypeError).
  async function call(method, path, body, headers = {}) {
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(API + path, {
      method, headers, credentials: "omit", mode: "cors",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { if (res.status !== 204) data = await res.json(); } catch (_) {}
    return { status: res.status, ok: res.ok, data, retryAfter: res.headers.get("Retry-After") };
  }
  const withToken = () => ({ "X-Conversation-Token": conv.token });
  const convPath = (suffix = "") => "conversations/" + encodeURIComponent(conv.id) + suffix;

  class Failure extends Error {
    constructor(res) {
      super((res.data && res.data.error && res.data.error.message) || "HTTP " + res.status);
      this.status = res.status;
      this.retryAfter = res.retryAfter;
    }
  }

  async function startConversation() {
    const res = await call("POST", "conversations", undefined, { Authorization: "Bearer " + (opts.apiKey || "") });
    if (!res.ok) throw new Failure(res);
    save({ id: res.data.conversation_id, token: res.data.token });
  }

  // ------------------------------------------------------------------------ the DOM
  // el("div", {class: "x"}, "text", child): strings become text nodes, never markup.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const c of children) node.append(c); // append(string) inserts a text node
    return node;
  }

  const CSS = `
    /* No inherited fonts/colours and no page rules (e.g. "div { border: … }") on our host element:
       !important in a shadow tree's :host wins over the page's own normal declarations. */
    :host { all: initial !important; }
    [hidden] { display: none !important; }
    .wrap { --accent: var(--attendant-accent, #1d4ed8); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; }
    button, textarea { font: inherit; }
    button:focus-visible, textarea:focus-visible { outline: 3px solid #111827; outline-offset: 2px; }
    header button:focus-visible { outline-color: #fff; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; width: 56px; height: 56px;
      border: 0; border-radius: 50%; background: var(--accent); color: #fff; cursor: pointer;
      box-shadow: 0 4px 14px rgba(0,0,0,.25); display: grid; place-items: center; }
    .launcher svg { width: 26px; height: 26px; fill: currentColor; }
    .panel { position: fixed; right: 20px; bottom: 88px; z-index: 2147483001; width: 370px; max-width: calc(100vw - 40px);
      height: min(560px, calc(100vh - 110px)); display: flex; flex-direction: column; background: #fff;
      border: 1px solid #d1d5db; border-radius: 12px; box-shadow: 0 10px 30px rgba(0,0,0,.2); overflow: hidden; }
    header { display: flex; align-items: center; gap: 6px; padding: 10px 12px; background: var(--accent); color: #fff; }
    h2 { flex: 1; margin: 0; font-size: 16px; font-weight: 600; }
    header button { background: transparent; color: #fff; border: 1px solid rgba(255,255,255,.7); border-radius: 6px;
      padding: 3px 8px; font-size: 13px; cursor: pointer; }
    .log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px; background: #f9fafb; }
    .msg { max-width: 85%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
    .user { align-self: flex-end; background: var(--accent); color: #fff; }
    .bot { align-self: flex-start; background: #fff; border: 1px solid #e5e7eb; }
    .cards { display: grid; gap: 6px; }
    .card { border: 1px solid #d1d5db; border-radius: 8px; padding: 8px 10px; background: #fff; font-size: 14px; }
    .card-title { font-weight: 600; }
    .price { color: #065f46; font-weight: 600; }
    .reason { color: #374151; font-size: 13px; }
    .typing, .error { margin: 0; padding: 6px 12px; font-size: 13px; }
    .typing { color: #374151; background: #f9fafb; }
    .error { color: #991b1b; background: #fef2f2; border-top: 1px solid #fecaca; }
    .suggest { display: flex; flex-wrap: wrap; gap: 6px; padding: 8px 12px 0; }
    .suggest button { border: 1px solid var(--accent); color: var(--accent); background: #fff; border-radius: 999px;
      padding: 3px 10px; font-size: 13px; cursor: pointer; }
    form { display: flex; gap: 8px; padding: 10px 12px; border-top: 1px solid #e5e7eb; margin: 0; }
    textarea { flex: 1; min-width: 0; resize: none; height: 42px; padding: 9px 10px; border: 1px solid #6b7280;
      border-radius: 8px; color: #111827; background: #fff; }
    .send { background: var(--accent); color: #fff; border: 0; border-radius: 8px; padding: 0 14px; font-weight: 600; cursor: pointer; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
    @media (max-width: 480px) { /* phones: the panel takes the whole screen */
      .panel { inset: 0; width: auto; max-width: none; height: auto; border: 0; border-radius: 0; }
    }`;

  const host = el("div", { id: "attendant-widget" });
  if (opts.accent) host.style.setProperty("--attendant-accent", opts.accent);
  const root = host.attachShadow({ mode: "open" });

  const launcher = el("button", { class: "launcher", type: "button", "aria-label": TITLE,
    "aria-expanded": "false", "aria-controls": "attendant-panel" });
  // A static icon (our own markup, no server text).
  launcher.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  const heading = el("h2", { id: "attendant-title" }, TITLE);
  const newButton = el("button", { type: "button" }, "New conversation");
  const closeButton = el("button", { type: "button", "aria-label": "Close chat" }, "✕");
  const log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const typing = el("p", { class: "typing", role: "status", hidden: "" }, "Assistant is typing…");
  const error = el("p", { class: "error", role: "alert", hidden: "" });
  const suggest = el("div", { class: "suggest", role: "group", "aria-label": "Suggestions", hidden: "" });
  const box = el("textarea", { rows: "1", "aria-label": "Your message", placeholder: "Type your question…",
    maxlength: "2000" });
  const sendButton = el("button", { class: "send", type: "submit" }, "Send");
  const form = el("form", {}, box, sendButton);
  const panel = el("div", { class: "panel", id: "attendant-panel", role: "dialog", "aria-labelledby": "attendant-title",
    hidden: "" }, el("header", {}, heading, newButton, closeButton), log, typing, suggest, error, form);
  // A constructed stylesheet is not an inline <style>, so a store's strict CSP style-src doesn't block it.
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch (_) { root.append(el("style", {}, CSS)); } // older browsers
  root.append(el("div", { class: "wrap" }, launcher, panel));

  function addMessage(role, text) {
    const mine = role === "user";
    const node = el("div", { class: "msg " + (mine ? "user" : "bot") },
      el("span", { class: "sr" }, mine ? "You: " : "Assistant: "), String(text ?? ""));
    log.append(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }

  function addProducts(products) {
    if (!products || !products.length) return;
    const cards = el("div", { class: "cards", role: "list", "aria-label": "Suggested products" });
    for (const p of products) {
      const price = Number.isFinite(p.price) ? money.format(p.price) : "";
      cards.append(el("div", { class: "card", role: "listitem" },
        el("div", { class: "card-title" }, String(p.title ?? "")),
        el("div", { class: "price" }, price),
        el("div", { class: "reason" }, String(p.reason ?? ""))));
    }
    log.append(cards);
    log.scrollTop = log.scrollHeight;
  }

  function showSuggestions(items) {
    suggest.replaceChildren(...(items || []).slice(0, 6).map((t) => {
      const b = el("button", { type: "button" }, String(t));
      b.addEventListener("click", () => { box.value = String(t); send(); });
      return b;
    }));
    suggest.hidden = !suggest.childElementCount;
  }

  function showError(err) {
    let text;
    if (!(err instanceof Failure)) text = "We couldn't reach customer support. Check your connection and try again.";
    else if (err.status === 429) {
      const s = parseInt(err.retryAfter, 10);
      text = "We're getting a lot of messages. Please wait " +
        (s > 0 ? (s >= 90 ? Math.ceil(s / 60) + " minutes" : s + " seconds") : "a minute") + " and try again.";
    } else if (err.status === 401 || err.status === 403) text = "Sorry, the chat isn't available on this page right now.";
    else if (err.status === 413 || err.status === 422) text = "That message couldn't be sent. Please shorten it and try again.";
    else text = "Something went wrong on our side. Please try again in a moment.";
    if (err instanceof Failure) console.warn("[attendant widget]", err.status, err.message); // for the store's developer
    error.textContent = text;
    error.hidden = false;
  }

  function setBusy(on) {
    busy = on;
    typing.hidden = !on;
    sendButton.disabled = on;
    box.readOnly = on; // readOnly, not disabled: focus stays in the box
  }

  // ------------------------------------------------------------------------ behaviour
  async function send() {
    const text = box.value.trim();
    if (!text || busy) return;
    setBusy(true);
    error.hidden = true;
    showSuggestions([]);
    const mine = addMessage("user", text);
    try {
      let res = null;
      if (conv) {
        res = await call("POST", convPath("/messages"), { text }, withToken());
        // The token ended (idle, closed, or key rotated): start over transparently, once.
        if (res.status === 401 || res.status === 404) { save(null); res = null; }
      }
      if (!res) {
        await startConversation();
        res = await call("POST", convPath("/messages"), { text }, withToken());
      }
      if (!res.ok) throw new Failure(res);
      box.value = ""; // only now: on failure the customer's text stays in the box
      addMessage("assistant", res.data.text);
      addProducts(res.data.products);
      showSuggestions(res.data.suggestions);
    } catch (err) {
      mine.remove();
      showError(err);
    } finally {
      setBusy(false);
      box.focus();
    }
  }

  // After a reload: show the conversation so far. A dead token just means a fresh start on the next send.
  async function restore() {
    restored = true;
    if (!conv) return;
    setBusy(true);
    try {
      const res = await call("GET", convPath("/messages"), undefined, withToken());
      if (res.status === 401 || res.status === 404) save(null);
      else if (res.ok) for (const m of res.data.messages || []) addMessage(m.role === "user" ? "user" : "assistant", m.text);
    } catch (_) { /* offline: the next send says so */ } finally { setBusy(false); }
  }

  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    box.focus();
    if (!restored) restore();
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  function newConversation() {
    if (busy) return;
    if (conv) { // best effort: end the old token on the server too
      call("DELETE", convPath(), undefined, withToken()).catch(() => {});
      save(null);
    }
    log.replaceChildren();
    showSuggestions([]);
    error.hidden = true;
    box.focus();
  }

  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  closeButton.addEventListener("click", close);
  newButton.addEventListener("click", newConversation);
  form.addEventListener("submit", (e) => { e.preventDefault(); send(); });
  box.addEventListener("keydown", (e) => { // Enter sends, Shift+Enter is a new line (not while composing, IME)
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  panel.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); close(); } });

  const mount = () => document.body.append(host);
  document.body ? mount() : document.addEventListener("DOMContentLoaded", mount);
})();
