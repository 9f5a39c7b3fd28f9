// The gateway's chat and control page. A plain client of the documented WebSocket protocol:
// connect, agent, agent.abort, agents.list, sessions.list/history/delete, status.
// Everything the page shows goes through textContent (never innerHTML): a model's or a
// transcript's text is shown as text, whatever it contains.

const BASE = document.querySelector('meta[name="openclaw-base"]').content;
const WS_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${BASE}`;
// Per base path: two gateways behind one host keep their own. (Storage is per origin: other
// pages of this origin can read it, which is why it is kept only when asked.)
const SECRET_KEY = `openclaw.gateway.secret:${BASE}`;

const $ = (id) => document.getElementById(id);

// h("div", {class: "x", onclick: f}, "text", child): an element, its attributes and children.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// --- the WebSocket client -----------------------------------------------------------------

class GatewayError extends Error {
  constructor(error) {
    super(error?.message || "The gateway refused the request.");
    this.code = error?.code || "error";
  }
}

class Gateway {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.onEvent = () => {};
    this.onClose = () => {};
  }

  // Opens the socket and authenticates; resolves with the hello payload, rejects with the
  // gateway's reason (a wrong secret, the rate limit) or a network failure.
  connect(secret) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let hello = false;
      ws.addEventListener("open", () => {
        this.call("connect", { auth: { token: secret } }).then(
          (payload) => { hello = true; resolve(payload); },
          (err) => reject(err),
        );
      });
      ws.addEventListener("message", (msg) => this.receive(msg.data));
      ws.addEventListener("close", (ev) => {
        const reason = ev.reason || "the connection closed";
        for (const { reject: fail } of this.pending.values()) {
          fail(new GatewayError({ code: "disconnected", message: reason }));
        }
        this.pending.clear();
        if (!hello) reject(new GatewayError({ code: "closed", message: reason }));
        else this.onClose(ev);
      });
    });
  }

  close() {
    if (this.ws) this.ws.close(1000, "bye");
  }

  call(method, params = {}) {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  receive(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (frame.type === "event") { this.onEvent(frame.event, frame.payload); return; }
    if (frame.type !== "res") return;
    const waiter = this.pending.get(frame.id);
    if (!waiter) return;
    this.pending.delete(frame.id);
    if (frame.ok) waiter.resolve(frame.payload);
    else waiter.reject(new GatewayError(frame.error));
  }
}

// --- state --------------------------------------------------------------------------------

const state = {
  gw: null,
  agents: [],
  defaultAgent: "main",
  run: null, // the run in progress: {runId, view}
  retryMs: 0, // while reconnecting after a lost connection: the next wait
  attachments: [], // {name, dataUrl, bytes}
  limits: null, // what an agent request may attach (from status)
  openSession: null, // the session whose transcript is open
};

function storedSecret() {
  return localStorage.getItem(SECRET_KEY) || sessionStorage.getItem(SECRET_KEY);
}

function storeSecret(secret, remember) {
  forgetSecret();
  (remember ? localStorage : sessionStorage).setItem(SECRET_KEY, secret);
}

function forgetSecret() {
  localStorage.removeItem(SECRET_KEY);
  sessionStorage.removeItem(SECRET_KEY);
}

// --- connecting ---------------------------------------------------------------------------

async function connect(secret, remember) {
  $("connect-error").textContent = "";
  $("connect-button").disabled = true;
  $("conn-state").textContent = "Connecting…";
  const gw = new Gateway(WS_URL);
  try {
    const hello = await gw.connect(secret);
    storeSecret(secret, remember);
    state.gw = gw;
    gw.onEvent = onEvent;
    gw.onClose = () => connectionLost();
    $("secret").value = "";
    state.retryMs = 0;
    $("conn-state").textContent = `Connected · gateway ${hello.server.version}`;
    await loadAgents();
    state.limits = (await gw.call("status")).limits;
    showConnected(true);
    showView("chat");
  } catch (err) {
    $("conn-state").textContent = "";
    $("connect-error").textContent = connectMessage(err);
    if (err.code !== "closed") forgetSecret();
    else if (state.retryMs) scheduleReconnect(); // the gateway is down: keep trying
    showConnected(false);
  } finally {
    $("connect-button").disabled = false;
  }
}

function connectMessage(err) {
  if (err.code === "invalid_api_key") return "Wrong token or password.";
  if (err.code === "rate_limit_exceeded") {
    return "Too many failed attempts from this address: wait a minute, then try again.";
  }
  if (err.code === "closed") return `Cannot reach the gateway (${err.message}).`;
  return err.message;
}

function connectionLost() {
  state.gw = null;
  if (state.run) finishRun(state.run, null, new GatewayError({ message: "Connection lost." }));
  showConnected(false);
  $("connect-error").textContent = "The connection to the gateway was lost.";
  state.retryMs = 1000;
  scheduleReconnect();
}

// Reconnects with the kept secret (a restarted gateway), waiting longer each time, up to 30 s.
function scheduleReconnect() {
  const wait = state.retryMs;
  state.retryMs = Math.min(wait * 2, 30_000);
  setTimeout(() => {
    const secret = storedSecret();
    if (!state.gw && secret && state.retryMs) connect(secret, !!localStorage.getItem(SECRET_KEY));
  }, wait);
}

function disconnect() {
  forgetSecret();
  state.retryMs = 0;
  const gw = state.gw;
  state.gw = null;
  if (gw) { gw.onClose = () => {}; gw.close(); }
  showConnected(false);
  $("conn-state").textContent = "";
}

function showConnected(connected) {
  $("connect-view").hidden = connected;
  $("tabs").hidden = !connected;
  $("disconnect").hidden = !connected;
  if (!connected) {
    for (const id of ["chat-view", "sessions-view", "status-view"]) $(id).hidden = true;
    $("secret").focus();
  }
}

function showView(name) {
  for (const button of $("tabs").querySelectorAll("button")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  $("chat-view").hidden = name !== "chat";
  $("sessions-view").hidden = name !== "sessions";
  $("status-view").hidden = name !== "status";
  if (name === "sessions") loadSessions();
  if (name === "status") loadStatus();
  if (name === "chat") $("prompt").focus();
}

async function loadAgents() {
  const { agents, defaultId } = await state.gw.call("agents.list");
  state.agents = agents;
  state.defaultAgent = defaultId;
  const select = $("agent-select");
  const current = select.value;
  select.replaceChildren(
    ...agents.map((a) => h("option", { value: a.id }, a.name && a.name !== a.id ? `${a.name} (${a.id})` : a.id)),
  );
  select.value = agents.some((a) => a.id === current) ? current : defaultId;
}

// --- chat ---------------------------------------------------------------------------------

// A message bubble; for the assistant, a place for text that grows and tool blocks between.
function bubble(role) {
  const el = h("div", { class: `msg ${role}` });
  return { el, text: null, tools: new Map() };
}

function appendText(view, text) {
  if (!view.text) {
    // A new paragraph (the first, or text after a tool block) starts at its first visible line.
    text = text.replace(/^\n+/, "");
    if (!text) return;
    view.text = h("div", { class: "text" });
    view.el.append(view.text);
  }
  view.text.append(text);
}

function toolBlock(view, id, name, args) {
  const state_ = h("span", { class: "state" }, "running…");
  const argsPre = h("pre", { class: "args" }, formatJson(args));
  const block = h(
    "details",
    { class: "tool running", "data-tool": name },
    h("summary", {}, "Tool ", h("code", {}, name), state_),
    h("div", { class: "small muted" }, "Arguments"),
    argsPre,
  );
  view.el.append(block);
  view.text = null; // text after the tool goes below it
  const entry = { block, state: state_ };
  view.tools.set(id, entry);
  return entry;
}

function toolResult(entry, { isError, durationMs, summary }) {
  entry.block.classList.remove("running");
  entry.block.classList.add(isError ? "failed" : "done");
  entry.state.textContent = `${isError ? "error" : "done"}${durationMs !== undefined ? ` · ${durationMs} ms` : ""}`;
  entry.block.append(h("div", { class: "small muted" }, isError ? "Error" : "Result"), h("pre", { class: "result" }, summary ?? ""));
}

function formatJson(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value ?? {}, null, 2);
}

function formatUsage(usage) {
  if (!usage) return "";
  return `${usage.prompt_tokens} → ${usage.completion_tokens} tokens`;
}

function turnMeta(view, { model, usage, stopReason }) {
  const parts = [model, formatUsage(usage)].filter(Boolean);
  const meta = h("div", { class: "meta" }, parts.join(" · "));
  if (stopReason && stopReason !== "stop" && stopReason !== "tool_calls") {
    meta.append(h("span", { class: `badge ${stopReason}` }, stopReason));
  }
  view.el.append(meta);
}

function scrollToEnd(container) {
  container.scrollTop = container.scrollHeight;
}

function sessionParams() {
  const key = $("session-key").value.trim();
  return { agentId: $("agent-select").value, ...(key ? { sessionKey: key } : {}) };
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!state.gw || state.run || (!text && !state.attachments.length)) return;
  $("chat-error").textContent = "";
  const images = state.attachments.map((a) => a.dataUrl);
  const log = $("messages");
  const mine = bubble("user");
  appendText(mine, text || "(image)");
  if (images.length) mine.el.append(h("div", { class: "thumbs" }, images.map((src) => h("img", { src, alt: "attached image" }))));
  log.append(mine.el);
  const reply = bubble("assistant");
  reply.el.classList.add("typing");
  log.append(reply.el);
  scrollToEnd(log);
  $("prompt").value = "";
  clearAttachments();
  const run = { runId: null, view: reply };
  state.run = run;
  setBusy(true);
  try {
    const result = await state.gw.call("agent", { message: text || "(image)", images, ...sessionParams() });
    finishRun(run, result, null);
  } catch (err) {
    finishRun(run, null, err);
  }
}

function finishRun(run, result, err) {
  if (state.run !== run) return;
  state.run = null;
  const view = run.view;
  view.el.classList.remove("typing");
  for (const entry of view.tools.values()) {
    if (entry.block.classList.contains("running")) toolResult(entry, { isError: true, summary: "(no result: the run ended)" });
  }
  if (result) {
    turnMeta(view, result);
    if (result.sessionKey) $("session-key").value = result.sessionKey;
  } else if (err) {
    view.el.append(h("div", { class: "err" }, err.message));
    $("chat-error").textContent = err.message;
  }
  setBusy(false);
  scrollToEnd($("messages"));
}

function setBusy(busy) {
  $("messages").setAttribute("aria-busy", busy ? "true" : "false");
  $("continue-session").disabled = busy;
  $("send").disabled = busy;
  $("stop").disabled = !busy || !state.run?.runId;
  $("agent-select").disabled = busy;
  $("session-key").disabled = busy;
  $("new-session").disabled = busy;
}

async function stop() {
  const run = state.run;
  if (!run?.runId || !state.gw) return;
  $("stop").disabled = true;
  try {
    await state.gw.call("agent.abort", { runId: run.runId });
  } catch (err) {
    $("chat-error").textContent = err.message;
  }
}

function onEvent(name, payload) {
  if (name !== "agent" || !state.run) return;
  const run = state.run;
  // This page runs one at a time: the first start after sending is its run.
  if (!run.runId && payload.stream === "lifecycle" && payload.data.phase === "start") {
    run.runId = payload.runId;
    $("stop").disabled = false;
  }
  if (payload.runId !== run.runId) return;
  const view = run.view;
  const data = payload.data;
  if (payload.stream === "assistant") {
    appendText(view, data.delta);
  } else if (payload.stream === "tool") {
    if (data.phase === "start") toolBlock(view, data.toolCallId, data.name, data.args);
    else {
      const entry = view.tools.get(data.toolCallId) || toolBlock(view, data.toolCallId, data.name, {});
      toolResult(entry, data);
    }
  }
  scrollToEnd($("messages"));
}

function newSession() {
  const now = new Date();
  const stamp = now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  const random = Math.random().toString(36).slice(2, 6);
  $("session-key").value = `ui-${stamp}-${random}`;
  $("messages").replaceChildren();
  $("prompt").focus();
}

// --- attachments --------------------------------------------------------------------------

// Checked against the gateway's limits here too, so that a file too large is refused with a
// clear message rather than sent.
function addFiles(files) {
  const limits = state.limits;
  $("chat-error").textContent = "";
  for (const file of files) {
    const refusal = attachmentRefusal(file, limits);
    if (refusal) { $("chat-error").textContent = refusal; continue; }
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      state.attachments.push({ name: file.name, dataUrl: reader.result, bytes: file.size });
      renderAttachments();
    });
    reader.readAsDataURL(file);
  }
  $("attach").value = "";
}

function attachmentRefusal(file, limits) {
  if (!limits) return null;
  const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
  if (!limits.imageTypes.includes(file.type)) return `${file.name}: not an image type the gateway takes (${limits.imageTypes.join(", ")}).`;
  if (file.size > limits.maxImageBytes) return `${file.name} is larger than the gateway's limit of ${mb(limits.maxImageBytes)} per image.`;
  if (state.attachments.length >= limits.maxImageParts) return `At most ${limits.maxImageParts} images per message.`;
  const total = state.attachments.reduce((n, a) => n + a.bytes, 0) + file.size;
  if (total > limits.maxTotalImageBytes) return `Images may total at most ${mb(limits.maxTotalImageBytes)} per message.`;
  return null;
}

function renderAttachments() {
  $("attachments").replaceChildren(
    ...state.attachments.map((a, i) =>
      h("span", { class: "attachment" },
        h("img", { src: a.dataUrl, alt: "" }), a.name,
        h("button", { type: "button", "aria-label": `Remove ${a.name}`, onclick: () => { state.attachments.splice(i, 1); renderAttachments(); } }, "×"),
      ),
    ),
  );
}

function clearAttachments() {
  state.attachments = [];
  $("attach").value = "";
  renderAttachments();
}

// --- transcripts (a stored session, or a session continued in the chat) --------------------

function contentText(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((part) => (part.type === "text" ? part.text : part.type === "image" ? `[image ${part.mime}, ${part.bytes} bytes]` : ""))
    .filter(Boolean)
    .join("\n");
}

// Renders transcript records into `container`: a tool call's result joins its call's block.
function renderTranscript(container, messages) {
  container.replaceChildren();
  const calls = new Map(); // toolCallId -> tool block entry
  let last = null; // the last assistant view, where unmatched tool results go
  for (const record of messages) {
    if (record.role === "user") {
      const view = bubble("user");
      appendText(view, contentText(record.content));
      container.append(view.el);
    } else if (record.role === "assistant") {
      const view = bubble("assistant");
      const text = contentText(record.content);
      if (text) appendText(view, text);
      for (const call of record.meta?.toolCalls || []) {
        calls.set(call.id, toolBlock(view, call.id, call.function.name, call.function.arguments));
      }
      if (record.meta?.error) view.el.append(h("div", { class: "err" }, record.meta.error.message));
      turnMeta(view, record);
      container.append(view.el);
      last = view;
    } else if (record.role === "tool") {
      const id = record.meta?.toolCallId;
      let entry = calls.get(id);
      if (!entry) {
        const view = last || bubble("assistant");
        if (!last) container.append(view.el);
        entry = toolBlock(view, id, record.meta?.toolName || "tool", record.meta?.arguments || {});
      }
      toolResult(entry, { isError: record.meta?.isError, durationMs: record.meta?.durationMs, summary: contentText(record.content) });
    } else if (record.role === "system" && record.meta?.type) {
      container.append(h("div", { class: "msg system" }, `— ${record.meta.reason || record.meta.type} —`));
    }
  }
  for (const entry of calls.values()) {
    if (entry.block.classList.contains("running")) entry.state.textContent = "no result stored";
  }
}

// --- sessions -----------------------------------------------------------------------------

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

async function loadSessions() {
  if (!state.gw) return;
  $("sessions-error").textContent = "";
  try {
    const search = $("session-search").value.trim();
    const { sessions } = await state.gw.call("sessions.list", {
      limit: 200,
      includeEphemeral: $("show-ephemeral").checked,
      ...(search ? { search } : {}),
    });
    const rows = sessions.map((s) =>
      h("tr", { "data-key": s.key },
        h("td", {}, s.agentId),
        h("td", { class: "key" }, s.key),
        h("td", {}, when(s.updatedAt)),
        h("td", {}, s.turns ?? "–"),
        h("td", {}, s.usage.promptTokens + s.usage.completionTokens),
        h("td", { class: "actions" }, h("button", { type: "button", "aria-label": `Open ${s.key}`, onclick: () => openTranscript(s) }, "Open")),
      ),
    );
    $("sessions-table").tBodies[0].replaceChildren(
      ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, search ? "No session key contains that." : "No sessions yet."))]),
    );
  } catch (err) {
    $("sessions-error").textContent = err.message;
  }
}

async function openTranscript(session) {
  $("sessions-error").textContent = "";
  try {
    const { sessionKey, messages } = await state.gw.call("sessions.history", { sessionKey: session.key, limit: 1000 });
    state.openSession = session;
    $("transcript-title").textContent = sessionKey;
    renderTranscript($("transcript-messages"), messages);
    $("transcript").hidden = false;
    $("transcript").scrollIntoView({ block: "start" });
  } catch (err) {
    $("sessions-error").textContent = err.message;
  }
}

async function deleteOpenSession() {
  const session = state.openSession;
  if (!session || !confirm(`Delete session ${session.key} and its transcript?`)) return;
  try {
    await state.gw.call("sessions.delete", { sessionKey: session.key });
    closeTranscript();
    await loadSessions();
  } catch (err) {
    $("sessions-error").textContent = err.message;
  }
}

function closeTranscript() {
  state.openSession = null;
  $("transcript").hidden = true;
  $("session-search").focus(); // focus goes back where the list starts, not to the page's top
}

async function continueOpenSession() {
  const session = state.openSession;
  if (!session || state.run) return; // a run in progress keeps its session
  try {
    const { messages } = await state.gw.call("sessions.history", { sessionKey: session.key, limit: 200 });
    $("agent-select").value = session.agentId;
    $("session-key").value = session.key;
    renderTranscript($("messages"), messages);
    showView("chat");
    scrollToEnd($("messages"));
  } catch (err) {
    $("sessions-error").textContent = err.message;
  }
}

// --- status -------------------------------------------------------------------------------

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hrs = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return [d && `${d}d`, (d || hrs) && `${hrs}h`, `${m}m`, `${s % 60}s`].filter(Boolean).join(" ");
}

async function loadStatus() {
  if (!state.gw) return;
  $("status-error").textContent = "";
  try {
    const s = await state.gw.call("status");
    const rows = [
      ["Version", s.version],
      ["Up for", duration(s.uptimeSeconds)],
      ["Auth", s.auth.mode],
      ["Process", `pid ${s.pid}`],
    ];
    $("status-summary").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    $("status-workers").textContent = s.workers > 1
      ? `This gateway runs ${s.workers} worker processes; this page's connection is served by pid ${s.pid}, and its uptime, active runs and Stop are that worker's.`
      : "One process serves this gateway.";
    $("status-endpoints").replaceChildren(
      ...Object.entries(s.endpoints).map(([name, on]) => h("li", { class: on ? "on" : "off" }, name)),
    );
    $("status-agents").tBodies[0].replaceChildren(
      ...s.agents.map((a) => h("tr", {},
        h("td", {}, a.id, a.default ? h("span", { class: "muted small" }, " (default)") : null),
        h("td", { class: "key" }, [a.model, ...a.fallbacks].join(", ")),
        h("td", {}, a.tools.join(", ") || "none"),
      )),
    );
    const now = Date.now() / 1000;
    $("status-runs").tBodies[0].replaceChildren(
      ...(s.activeRuns.length
        ? s.activeRuns.map((r) => h("tr", {},
            h("td", { class: "key" }, r.runId),
            h("td", { class: "key" }, r.sessionKey),
            h("td", {}, duration(Math.max(0, now - r.startedAt))),
            h("td", { class: "actions" }, r.abortable ? h("button", { type: "button", "aria-label": `Stop run ${r.runId}`, onclick: () => abortRun(r.runId) }, "Stop") : null),
          ))
        : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No run in progress."))]),
    );
    $("status-config").textContent = JSON.stringify(s.config, null, 2);
  } catch (err) {
    $("status-error").textContent = err.message;
  }
}

async function abortRun(runId) {
  try {
    await state.gw.call("agent.abort", { runId });
  } catch (err) {
    $("status-error").textContent = err.message;
  }
  loadStatus();
}

// --- wiring -------------------------------------------------------------------------------

function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function init() {
  $("connect-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    connect($("secret").value, $("remember").checked);
  });
  $("disconnect").addEventListener("click", disconnect);
  for (const button of $("tabs").querySelectorAll("button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) send(ev);
  });
  $("stop").addEventListener("click", stop);
  $("new-session").addEventListener("click", newSession);
  $("agent-select").addEventListener("change", () => { $("session-key").value = ""; $("messages").replaceChildren(); });
  $("attach").addEventListener("change", (ev) => addFiles(ev.target.files));
  $("attach-label").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("attach").click(); }
  });
  $("session-search").addEventListener("input", debounce(loadSessions, 250));
  $("show-ephemeral").addEventListener("change", loadSessions);
  $("refresh-sessions").addEventListener("click", loadSessions);
  $("close-transcript").addEventListener("click", closeTranscript);
  $("delete-session").addEventListener("click", deleteOpenSession);
  $("continue-session").addEventListener("click", continueOpenSession);
  $("refresh-status").addEventListener("click", loadStatus);

  const secret = storedSecret();
  if (secret) {
    $("remember").checked = !!localStorage.getItem(SECRET_KEY);
    connect(secret, $("remember").checked);
  } else {
    showConnected(false);
  }
}

init();
