// The gateway's dashboard: plain DOM, no framework, no build step. Every
// value from the API reaches the page as text (textContent / Text nodes),
// never as markup, so a file named like an HTML tag stays a name.
/* global Node, document, sessionStorage, fetch, FormData, WebSocket, URLSearchParams, setInterval, location, requestAnimationFrame */

const KEY_STORAGE = "filerelay.apiKey";
const FINAL_STATES = new Set(["delivered", "failed", "error"]);
const KNOWN_STATES = new Set(["received", "published", "delivered", "failed", "error", "in_progress"]);
const JOB_STATES = new Set(["PENDING", "IN_PROGRESS", "COMPLETED", "FAILED"]);
const MAX_EVENTS = 50;

const $ = (id) => document.getElementById(id);

let apiKey = sessionStorage.getItem(KEY_STORAGE);
let socket = null;
let reconnectDelay = 1000;
let reconnectTimer = null;
let refreshTimer = null;
let openRecordId = null;
/** file id → filename, from every list and record seen, so live messages can name their file. */
const names = new Map();
/** file id → the latest live message, while the file is in flight. */
const inFlight = new Map();
/** file id → the last state seen live, to log changes only. */
const lastState = new Map();

// ---------------------------------------------------------------------------
// Rendering helpers: strings become Text nodes, never parsed as HTML.

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function stateBadge(state) {
  const s = state ?? "unknown";
  return el("span", { class: KNOWN_STATES.has(s) || JOB_STATES.has(s) ? `state state-${s}` : "state" }, s);
}

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = bytes;
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${n.toFixed(1)} ${units[u]}`;
}

function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

function timeCell(iso) {
  return el("td", { title: iso ?? undefined }, formatTime(iso));
}

/** One line per sink group: where it landed, or its state and error code. */
function deliveryList(deliveries) {
  const entries = Object.entries(deliveries ?? {});
  if (entries.length === 0) return el("span", { class: "muted" }, "—");
  return el(
    "ul",
    { class: "plain deliveries" },
    ...entries.map(([group, d]) =>
      el(
        "li",
        { dataset: { group } },
        el("strong", {}, group),
        ": ",
        d.location ? el("span", { class: "location" }, d.location) : stateBadge(d.state),
        d.code ? el("span", { class: "code" }, ` ${d.code}`) : null,
      ),
    ),
  );
}

// ---------------------------------------------------------------------------
// API access and errors.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, init = {}) {
  const res = await fetch(path, {
    ...init,
    headers: { ...init.headers, authorization: `Bearer ${apiKey}` },
    cache: "no-store",
  });
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page): the status and the text are shown instead.
    body = null;
  }
  if (!res.ok) {
    const code = body && typeof body.code === "string" ? body.code : `HTTP_${res.status}`;
    const message = body && typeof body.error === "string" ? body.error : text.slice(0, 500) || res.statusText;
    throw new ApiError(res.status, code, message);
  }
  return body;
}

function describe(err) {
  if (err instanceof ApiError) return `${err.status} ${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

function showError(context, err) {
  const box = $("error");
  box.textContent = `${context}: ${describe(err)}`;
  box.dataset.context = context;
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) signOut(`${context}: ${describe(err)}`);
}

/**
 * Hides the error shown, or only one of `context` (a list that loads again
 * takes back its own error, never an upload's refusal the user has not read).
 */
function clearError(context) {
  const box = $("error");
  if (typeof context === "string" && box.dataset.context !== context) return;
  box.hidden = true;
  box.textContent = "";
  delete box.dataset.context;
}

// ---------------------------------------------------------------------------
// Files list.

function fileQuery() {
  const q = new URLSearchParams({ limit: "50" });
  for (const [name, id] of [
    ["state", "filter-state"],
    ["source", "filter-source"],
    ["job", "filter-job"],
  ]) {
    const v = $(id).value.trim();
    if (v) q.set(name, v);
  }
  return q;
}

let filesRequest = 0;
async function refreshFiles() {
  // Only the newest answer is shown: an older, slower one must not overwrite it.
  const mine = ++filesRequest;
  try {
    const { files } = await api(`/api/v1/files?${fileQuery()}`);
    if (mine !== filesRequest) return;
    for (const f of files) names.set(f.id, f.filename);
    $("files").tBodies[0].replaceChildren(...files.map(fileRow));
    $("files-empty").hidden = files.length > 0;
    clearError("listing files");
  } catch (err) {
    showError("listing files", err);
  }
}

function fileRow(f) {
  const row = el(
    "tr",
    { class: "clickable", tabindex: "0", dataset: { fileId: f.id } },
    el("td", { title: f.id }, el("span", { class: "filename" }, f.filename), el("div", { class: "muted id" }, f.id)),
    el("td", {}, stateBadge(f.state)),
    el("td", {}, formatSize(f.size)),
    timeCell(f.updatedAt),
    el("td", {}, deliveryList(f.deliveries)),
  );
  row.addEventListener("click", () => void openRecord(f.id));
  row.addEventListener("keydown", (e) => {
    if (e.key === "Enter") void openRecord(f.id);
  });
  return row;
}

/** Many live messages arrive together: the list is re-read once they settle. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    void refreshFiles();
    if (openRecordId) void openRecord(openRecordId, { quiet: true });
  }, 400);
}

// ---------------------------------------------------------------------------
// One record.

async function openRecord(id, { quiet = false } = {}) {
  openRecordId = id;
  try {
    const enc = encodeURIComponent(id);
    const [r, result] = await Promise.all([api(`/api/v1/files/${enc}`), api(`/api/v1/files/${enc}/result`)]);
    if (openRecordId !== id) return;
    names.set(r.id, r.filename);
    $("record-body").replaceChildren(...recordView(r, result));
    $("record").hidden = false;
    if (!quiet) $("record").scrollIntoView({ block: "nearest" });
  } catch (err) {
    showError(`reading file ${id}`, err);
  }
}

function recordLink(id, label) {
  return el("button", { type: "button", class: "link", onclick: () => void openRecord(id) }, label ?? id);
}

function recordView(r, result) {
  const facts = [
    ["file id", r.id],
    ["state", stateBadge(r.state)],
    ["source", r.source],
    ["subject", r.subject],
    ["size", formatSize(r.size)],
    ["sha256", r.sha256 ?? "—"],
    ["content type", r.contentType ?? "—"],
    ["job", r.jobId ?? "—"],
    ["parent", r.parentId ? recordLink(r.parentId, names.get(r.parentId) ?? r.parentId) : "—"],
    ["published", formatTime(r.publishedAt)],
    ["updated", formatTime(r.updatedAt)],
  ];
  if (r.error) {
    facts.push(["error", [r.error.code, r.error.reason].filter(Boolean).join(": ") || "—"]);
    if (r.error.location) facts.push(["kept at", r.error.location]);
  }
  const out = [
    el("h3", { class: "filename" }, r.filename),
    el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("h4", {}, "Deliveries"),
  ];
  const deliveries = Object.entries(r.deliveries ?? {});
  out.push(
    deliveries.length === 0
      ? el("p", { class: "muted" }, "No sink group has reported yet.")
      : el(
          "table",
          { class: "deliveries-table" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ...["group", "state", "location", "error", "attempts", "at", "by"].map((h) => el("th", {}, h)),
            ),
          ),
          el(
            "tbody",
            {},
            ...deliveries.map(([group, d]) =>
              el(
                "tr",
                { dataset: { group } },
                el("td", {}, group),
                el("td", {}, stateBadge(d.state)),
                el("td", { class: "location" }, d.location ?? "—"),
                el("td", {}, [d.code, d.reason].filter(Boolean).join(": ") || "—"),
                el("td", {}, d.attempts ?? "—"),
                timeCell(d.at),
                el("td", {}, d.by ?? "—"),
              ),
            ),
          ),
        ),
  );
  const children = result?.children ?? [];
  out.push(el("h4", {}, `Children (${children.length})`));
  if (children.length > 0) {
    out.push(
      el(
        "ul",
        { class: "plain children" },
        ...children.map((c) =>
          el(
            "li",
            {},
            recordLink(c.file_id, c.filename ?? c.file_id),
            " ",
            stateBadge(c.state),
            deliveryList(c.locations),
          ),
        ),
      ),
    );
  }
  out.push(el("h4", {}, "Timeline"));
  out.push(
    el(
      "ol",
      { class: "plain timeline" },
      ...(r.events ?? []).map((e) =>
        el(
          "li",
          {},
          el("time", { datetime: e.at }, formatTime(e.at)),
          " ",
          e.event,
          e.group ? ` (${e.group})` : "",
          el("span", { class: "muted" }, ` by ${e.by}`),
        ),
      ),
    ),
  );
  return out;
}

// ---------------------------------------------------------------------------
// Live updates over the WebSocket.

function connectLive() {
  if (!apiKey) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws?access_token=${encodeURIComponent(apiKey)}`);
  socket = ws;
  $("connection").textContent = "connecting…";
  ws.addEventListener("open", () => {
    reconnectDelay = 1000;
    $("connection").textContent = "live";
  });
  ws.addEventListener("message", (e) => {
    try {
      onLive(JSON.parse(String(e.data)));
    } catch (err) {
      showError("live update", err);
    }
  });
  ws.addEventListener("close", (e) => {
    if (socket !== ws) return;
    socket = null;
    if (e.code === 4401) {
      signOut(`live updates refused: ${e.reason || "AUTH_REQUIRED"}`);
      return;
    }
    $("connection").textContent = `live updates lost (${e.code}${e.reason ? ` ${e.reason}` : ""}); reconnecting…`;
    reconnectTimer = setTimeout(connectLive, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 30_000);
  });
}

function disconnectLive() {
  clearTimeout(reconnectTimer);
  const ws = socket;
  socket = null;
  ws?.close(1000);
  $("connection").textContent = "";
}

function onLive(m) {
  if (!m || typeof m.file_id !== "string") return;
  const previous = lastState.get(m.file_id);
  lastState.set(m.file_id, m.state);
  if (FINAL_STATES.has(m.state)) inFlight.delete(m.file_id);
  else inFlight.set(m.file_id, m);
  if (previous !== m.state) {
    logEvent(m, previous);
    scheduleRefresh();
  }
  scheduleLiveRender();
}

function logEvent(m, previous) {
  const name = names.get(m.file_id) ?? m.file_id;
  const item = el(
    "li",
    { dataset: { fileId: m.file_id, state: m.state } },
    el("time", {}, new Date().toLocaleTimeString()),
    " ",
    el("span", { class: "filename" }, name),
    ": ",
    previous ? `${previous} → ` : "",
    stateBadge(m.state),
    m.group ? ` (${m.group})` : "",
  );
  const list = $("live-events");
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

let renderQueued = false;
function scheduleLiveRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    $("live-files").replaceChildren(
      ...[...inFlight.values()].map((m) => {
        const value = typeof m.progress === "number" ? m.progress : null;
        const bar = el("progress", { max: "1" });
        if (value !== null) bar.value = value;
        return el(
          "li",
          { dataset: { fileId: m.file_id } },
          el("span", { class: "filename" }, names.get(m.file_id) ?? m.file_id),
          " ",
          stateBadge(m.state),
          " ",
          bar,
          ` ${formatSize(m.bytes)} of ${formatSize(m.total)}`,
        );
      }),
    );
  });
}

// ---------------------------------------------------------------------------
// Uploads and upload jobs.

async function upload(event) {
  event.preventDefault();
  const files = [...$("upload-files").files];
  if (files.length === 0) return;
  const form = new FormData();
  const path = $("upload-path").value.trim();
  // The gateway applies a `path` field to the file parts after it.
  if (path) form.append("path", path);
  for (const f of files) form.append("file", f, f.name);
  const status = $("upload-status");
  status.textContent = `Uploading ${files.length} file(s)…`;
  try {
    const { files: published } = await api("/api/v1/files/upload", { method: "POST", body: form });
    for (const p of published) names.set(p.file_id, p.filename);
    status.textContent = `Uploaded ${published.length} file(s).`;
    $("upload-result").tBodies[0].replaceChildren(
      ...published.map((p) =>
        el(
          "tr",
          { dataset: { fileId: p.file_id } },
          el("td", { class: "filename" }, p.filename),
          el("td", {}, formatSize(p.size)),
          el("td", { class: "hash" }, p.sha256),
          el("td", {}, recordLink(p.file_id)),
        ),
      ),
    );
    $("upload-result").hidden = false;
    $("upload-form").reset();
    clearError("upload");
    scheduleRefresh();
  } catch (err) {
    status.textContent = `Upload failed: ${describe(err)}`;
    showError("upload", err);
  }
}

async function refreshJobs() {
  try {
    const { uploads } = await api("/api/v1/uploads/?limit=50");
    $("jobs").tBodies[0].replaceChildren(...uploads.map(jobRow));
    $("jobs-empty").hidden = uploads.length > 0;
    clearError("listing upload jobs");
  } catch (err) {
    showError("listing upload jobs", err);
  }
}

function jobRow(j) {
  const bar = el("progress", { max: "1" });
  bar.value = j.progress;
  const row = el(
    "tr",
    { class: "clickable", title: "show this job's files", dataset: { uploadId: j.upload_id } },
    el("td", {}, j.upload_id),
    el("td", {}, stateBadge(j.state), j.error ? el("div", { class: "code" }, j.error) : null),
    el("td", {}, bar, ` ${Math.round(j.progress * 100)}%`),
    el("td", {}, `${j.completed_files} done, ${j.failed_files} failed of ${j.total_files}`),
    el("td", {}, j.source_folder, j.pattern ? el("div", { class: "muted" }, j.pattern) : null),
    timeCell(j.updated_at),
  );
  row.addEventListener("click", () => {
    $("filter-job").value = j.upload_id;
    void refreshFiles();
  });
  return row;
}

// ---------------------------------------------------------------------------
// The key, and start-up.

function signOut(reason) {
  apiKey = null;
  sessionStorage.removeItem(KEY_STORAGE);
  disconnectLive();
  $("app").hidden = true;
  $("forget-key").hidden = true;
  $("key-form").hidden = false;
  if (reason) {
    $("error").textContent = reason;
    $("error").dataset.context = "sign-in";
    $("error").hidden = false;
  }
}

function signIn() {
  $("key-form").hidden = true;
  $("app").hidden = false;
  $("forget-key").hidden = false;
  connectLive();
  void refreshFiles();
  void refreshJobs();
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  apiKey = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-input").value = "";
  clearError();
  signIn();
});
$("forget-key").addEventListener("click", () => signOut());
$("error").addEventListener("click", () => clearError());
$("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  void refreshFiles();
});
$("upload-form").addEventListener("submit", (e) => void upload(e));
$("jobs-refresh").addEventListener("click", () => void refreshJobs());
$("record-close").addEventListener("click", () => {
  openRecordId = null;
  $("record").hidden = true;
});
setInterval(() => {
  if (apiKey && !$("app").hidden) void refreshJobs();
}, 15_000);

if (apiKey) signIn();
