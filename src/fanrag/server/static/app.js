// fanrag web UI. Plain JavaScript, no build step, no dependency.
//
// Ask: POST /query {stream: true} answers as server-sent events: sources (before generation starts),
// token..., timings (every span: transform, each branch and its shard searches, fuse, fetch, rerank,
// generate), done (the answer and its citations) or error. The diagram draws the spans; citations open
// their chunk in its document (GET /documents/{id}?around=chunk).
// Ingest: GET /events/ingest sends the server's ingest runs as "state" events; uploads POST /ingest.
// EventSource can neither POST nor send a bearer token, so both streams are read with fetch.
"use strict";

const $ = (selector) => document.querySelector(selector);
const REPLAY_MS = 1200; // the diagram replays a query's real timeline over about this long
const CITATION = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;
let ingestStream = null; // the AbortController of the ingest events being followed, once the view opened

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ------------------------------------------------------------------------------------------ HTTP

function authHeaders(extra = {}) {
  const token = $("#token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function errorText(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    return `HTTP ${response.status}`;
  }
  const detail = body.detail ?? body.error?.message ?? body;
  if (typeof detail === "string") return `${response.status}: ${detail}`;
  if (Array.isArray(detail)) {
    return `${response.status}: ` + detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  return `${response.status}: ${JSON.stringify(detail)}`;
}

// Server-sent events from a fetch response: yields {event, data} with data parsed as JSON.
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

// ------------------------------------------------------------------------------------------ tabs

function selectTab(tab) {
  for (const t of document.querySelectorAll("[role=tab]")) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
  if (tab.id === "tab-ingest" && !ingestStream) followIngest(); // follow the runs once the view is open
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) selectTab(tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length]);
    });
  }
}

// ------------------------------------------------------------------------------------------ the diagram

// Rows in the order the query runs: transform, each branch with its shard searches under it, then the
// merge steps. A shard span is "shard:0", or "shard:0 q2" for the second sub-query of a branch.
function diagramRows(spans) {
  const top = spans.filter((s) => !s.parent);
  const children = (name) => spans.filter((s) => s.parent === name).sort(byShard);
  const rows = [];
  for (const span of top) {
    rows.push({ span, kind: kindOf(span.name), child: false });
    for (const c of children(span.name)) rows.push({ span: c, kind: "shard", child: true });
  }
  return rows;
}

function byShard(a, b) {
  const key = (s) => {
    const m = /^shard:(\d+)(?: q(\d+))?$/.exec(s.name) || [];
    return [Number(m[2] || 0), Number(m[1] || 0)];
  };
  const [qa, sa] = key(a);
  const [qb, sb] = key(b);
  return qa - qb || sa - sb || a.name.localeCompare(b.name);
}

function kindOf(name) {
  if (name === "transform") return "transform";
  if (name.startsWith("branch:")) return "branch";
  if (name === "generate") return "generate";
  return "merge";
}

function rowLabel(span, child) {
  if (!child) return span.name.replace(/^branch:/, "");
  const m = /^shard:(\d+)(?: q(\d+))?$/.exec(span.name);
  if (!m) return span.name;
  return m[2] ? `q${m[2]} · shard ${m[1]}` : `shard ${m[1]}`;
}

function statusClass(status) {
  if (!status || status === "ok") return "";
  return status.startsWith("skipped") ? "skipped" : "failed";
}

// Draw the spans; ``replay`` animates each bar from its start to its end, scaled to REPLAY_MS.
// ``running`` adds a growing generate row (the answer is being written). The scale is the whole query,
// or with "zoom to retrieval" the steps before generation (a longer generate bar is cut at the edge).
function drawDiagram(spans, { replay = false, running = false } = {}) {
  const list = $("#diagram");
  list.replaceChildren();
  diagram.spans = spans;
  diagram.running = running;
  const query = Math.max(1, ...spans.map((s) => s.end_ms));
  const retrieval = Math.max(1, ...spans.filter((s) => s.name !== "generate").map((s) => s.end_ms));
  const total = $("#zoom").checked ? retrieval : query;
  $("#fanout-total").textContent = running ? `(retrieval ${retrieval.toFixed(1)} ms, generating…)`
                                           : `(${query.toFixed(1)} ms, retrieval ${retrieval.toFixed(1)} ms)`;
  for (const { span, kind, child } of diagramRows(spans)) {
    const ms = span.end_ms - span.start_ms;
    const bar = el("span", { class: "bar" });
    const status = statusClass(span.status);
    const shown = status ? span.status : `${ms.toFixed(1)} ms`;
    const label = rowLabel(span, child);
    const row = el("li", { class: [kind, child ? "child" : "", status].join(" ").trim(),
                           data: { span: span.name, parent: span.parent || "" },
                           title: `${span.name}: ${span.start_ms.toFixed(1)}–${span.end_ms.toFixed(1)} ms (${span.status})` },
      el("span", { class: "name" }, label),
      el("span", { class: "track", "aria-hidden": "true" }, bar),
      el("span", { class: "ms" }, shown),
      el("span", { class: "visually-hidden" }, ` from ${span.start_ms.toFixed(1)} to ${span.end_ms.toFixed(1)} ms, ${span.status}`));
    list.append(row);
    bar.style.left = `${(100 * span.start_ms) / total}%`;
    const width = `${Math.min(100 * ms, 100 * (total - span.start_ms)) / total}%`;
    if (!replay) {
      bar.style.width = width;
      continue;
    }
    bar.style.transitionDelay = `${(REPLAY_MS * span.start_ms) / total}ms`;
    bar.style.transitionDuration = `${Math.max(60, (REPLAY_MS * ms) / total)}ms`;
    requestAnimationFrame(() => requestAnimationFrame(() => { bar.style.width = width; }));
  }
  if (running) {
    const bar = el("span", { class: "bar" });
    bar.style.left = "98%";
    bar.style.width = "2%";
    list.append(el("li", { class: "generate running", data: { span: "generate" } },
      el("span", { class: "name" }, "generate"), el("span", { class: "track", "aria-hidden": "true" }, bar),
      el("span", { class: "ms" }, "running")));
  }
}

// ------------------------------------------------------------------------------------------ answers

const ask = { sources: new Map(), citations: new Map(), text: "" };
const diagram = { spans: [], running: false }; // what was drawn last, to redraw at another scale

// The answer's text with each [n] (also [2, 3]) a link to its chunk; ``refs`` maps n to a source.
function renderAnswer(text, refs) {
  const box = $("#answer");
  box.replaceChildren();
  let last = 0;
  for (const m of text.matchAll(CITATION)) {
    box.append(text.slice(last, m.index));
    const numbers = m[1].split(/\s*[,;]\s*/).map(Number);
    if (!numbers.every((n) => refs.has(n))) {
      box.append(m[0]);
    } else {
      for (const n of numbers) box.append(citeLink(n, refs.get(n)));
    }
    last = m.index + m[0].length;
  }
  box.append(text.slice(last));
}

function citeLink(n, ref) {
  const link = el("a", { class: "cite", href: `#doc/${ref.doc_id}/${ref.chunk_id}`,
                         data: { n: String(n), chunkId: ref.chunk_id, docId: ref.doc_id },
                         "aria-label": `source ${n}: ${ref.source}${ref.page ? `, page ${ref.page}` : ""}` }, `[${n}]`);
  link.addEventListener("click", (e) => {
    e.preventDefault();
    openChunk(ref.doc_id, ref.chunk_id, link);
  });
  return link;
}

function renderSources(sources) {
  const list = $("#sources");
  list.replaceChildren();
  for (const s of sources) {
    ask.sources.set(s.n, s);
    const where = `${s.source}${s.page ? ` · page ${s.page}` : ""} · score ${s.score.toFixed(3)}`;
    list.append(el("li", { data: { n: String(s.n), chunkId: s.chunk_id } },
      el("div", { class: "where" }, citeLink(s.n, s), " ", where),
      el("blockquote", { class: "chunk-text" }, s.text)));
  }
}

function resetAsk() {
  ask.sources = new Map();
  ask.citations = new Map();
  ask.text = "";
  $("#ask-error").hidden = true;
  $("#sources").replaceChildren();
  $("#diagram").replaceChildren();
  $("#fanout-total").textContent = "(retrieving…)";
  $("#answer-by").textContent = "";
  renderAnswer("", ask.sources);
}

function showAskError(text) {
  const box = $("#ask-error");
  box.textContent = text;
  box.hidden = false;
}

async function onAsk(event) {
  event.preventDefault();
  const query = $("#question").value.trim();
  if (!query) return;
  const body = { query, stream: true };
  const filter = $("#filter").value.trim();
  if (filter) body.filter = filter;
  resetAsk();
  const button = $("#ask-button");
  const answer = $("#answer");
  button.disabled = true;
  answer.setAttribute("aria-busy", "true");
  try {
    const response = await fetch("/query", { method: "POST", body: JSON.stringify(body),
                                             headers: authHeaders({ "Content-Type": "application/json" }) });
    if (!response.ok) {
      showAskError(await errorText(response));
      $("#fanout-total").textContent = "";
      return;
    }
    let spans = [];
    for await (const { event, data } of readEvents(response)) {
      if (event === "sources") {
        spans = data.spans;
        renderSources(data.sources);
        drawDiagram(spans, { replay: true, running: true });
      } else if (event === "token") {
        ask.text += data.text;
        renderAnswer(ask.text, ask.sources);
      } else if (event === "timings") {
        drawDiagram(data.spans, { replay: spans.length === 0 });
      } else if (event === "done") {
        for (const c of data.citations) ask.citations.set(c.n, c);
        // the answer's own citations decide what [n] is; the sources' numbers fill in the rest
        renderAnswer(data.answer, new Map([...ask.sources, ...ask.citations]));
        $("#answer-by").textContent = data.generator ? `(${data.generator})` : "";
        $("#answer").dataset.done = "true";
      } else if (event === "error") {
        showAskError(data.detail);
      }
    }
  } catch (err) {
    showAskError(`the answer stopped: ${err.message}`);
  } finally {
    button.disabled = false;
    answer.setAttribute("aria-busy", "false");
  }
}

// ------------------------------------------------------------------------------------------ the chunk view

async function openChunk(docId, chunkId, opener) {
  const dialog = $("#doc-view");
  const list = $("#doc-chunks");
  list.replaceChildren(el("li", { class: "muted" }, "loading…"));
  $("#doc-title").textContent = "Document";
  $("#doc-meta").textContent = "";
  dialog.returnFocus = opener;
  if (!dialog.open) dialog.showModal();
  const url = `/documents/${encodeURIComponent(docId)}?around=${encodeURIComponent(chunkId)}&limit=9`;
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) {
    list.replaceChildren(el("li", { class: "error" }, await errorText(response)));
    return;
  }
  const { document: doc, chunks, total_chunks: total } = await response.json();
  $("#doc-title").textContent = doc.title || doc.source;
  $("#doc-meta").textContent = [doc.source, doc.n_pages ? `${doc.n_pages} pages` : "",
                                `${total} chunks`].filter(Boolean).join(" · ");
  list.replaceChildren();
  let focus = null;
  for (const c of chunks) {
    const pages = c.page_start ? (c.page_end > c.page_start ? `pages ${c.page_start}–${c.page_end}` : `page ${c.page_start}`) : "";
    const item = el("li", { data: { chunkId: c.chunk_id }, tabIndex: -1 },
      el("span", { class: "page" }, [`chunk ${c.position + 1}`, pages].filter(Boolean).join(" · ")),
      el("span", { class: "chunk-text" }, c.text));
    if (c.chunk_id === chunkId) {
      item.classList.add("focus");
      item.setAttribute("aria-current", "true");
      focus = item;
    }
    list.append(item);
  }
  if (focus) {
    focus.scrollIntoView({ block: "center" });
    focus.focus();
  }
}

function setUpDialog() {
  const dialog = $("#doc-view");
  $("#doc-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.returnFocus?.focus());
}

// ------------------------------------------------------------------------------------------ ingestion

const STAGES = [
  ["load_chunk", "loading + chunking", "parts"],
  ["queued", "waiting to embed", "parts"],
  ["embedding", "embedding", "chunks"],
  ["writing", "writing", "chunks"],
  ["committed", "committed", "documents"],
  ["unchanged", "unchanged", "documents"],
  ["failed", "failed", "documents"],
];

function renderIngest(state) {
  const run = state.runs[0]; // the newest
  $("#runs").replaceChildren(...state.runs.map(runLine));
  if (!run) return;
  $("#run-label").textContent = `Run ${run.id} · ${run.label} · ${run.status}` +
    (run.error ? ` · ${run.error}` : "");
  $("#run-label").dataset.status = run.status;
  $("#stages").replaceChildren(...STAGES.map(([key, label, unit]) =>
    el("div", { class: key, data: { stage: key } },
      el("dt", {}, label), el("dd", {}, String(run.stages[key]), " ", el("small", {}, unit)))));
  const biggest = Math.max(1, ...run.batches.map((b) => b.chunks));
  $("#batches").replaceChildren(...run.batches.map((b) => {
    const bar = el("li", { title: `${b.chunks} chunks of ${b.docs} documents in ${b.seconds} s: ${b.chunks_per_s} chunks/s` },
      el("span", { class: "visually-hidden" }, `${b.chunks} chunks, ${b.chunks_per_s} per second`));
    bar.style.height = `${(100 * b.chunks) / biggest}%`;
    return bar;
  }));
  $("#throughput").textContent = run.embed.seconds
    ? `(${count(run.chunks.embedded, "chunk")} embedded, ${run.embed.chunks_per_s} chunks/s while embedding; ` +
      `the latest ${count(run.batches.length, "batch", "batches")} shown)`
    : "";
  const failures = [...(run.summary ? run.summary.failed : run.failures)];
  $("#failures").replaceChildren(...(failures.length
    ? failures.map((f) => el("li", {}, `${f.source}: `, el("span", { class: "reason" }, f.reason)))
    : [el("li", { class: "muted" }, "none")]));
}

function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

function runLine(run) {
  const s = run.summary;
  const counts = s ? `${s.ok} committed, ${s.unchanged} unchanged, ${s.failed.length} failed, ${count(s.chunks, "chunk")}, ${s.wall_s} s`
                   : `${run.stages.committed} committed so far`;
  return el("li", { data: { run: String(run.id), status: run.status } }, `#${run.id} ${run.label}: ${run.status} · ${counts}`);
}

async function followIngest() {
  ingestStream?.abort();
  const controller = new AbortController();
  ingestStream = controller;
  const live = $("#live");
  while (!controller.signal.aborted) {
    try {
      const response = await fetch("/events/ingest", { headers: authHeaders(), signal: controller.signal });
      if (!response.ok) {
        live.textContent = `(${await errorText(response)})`;
        return; // a token change reconnects
      }
      live.textContent = "(live)";
      for await (const { event, data } of readEvents(response)) {
        if (event === "state") renderIngest(data);
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    live.textContent = "(reconnecting…)";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function onUpload(event) {
  event.preventDefault();
  const files = $("#files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const status = $("#upload-status");
  const button = $("#upload-button");
  button.disabled = true;
  status.className = "muted";
  status.textContent = `uploading ${files.length} file(s)…`;
  try {
    const response = await fetch("/ingest", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      status.className = "error";
      status.textContent = await errorText(response);
      return;
    }
    const s = await response.json();
    status.textContent = `done: ${s.ok} committed, ${s.unchanged} unchanged, ${s.failed.length} failed`;
    $("#upload-form").reset();
  } catch (err) {
    status.className = "error";
    status.textContent = `upload failed: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------ start

function start() {
  const token = $("#token");
  token.value = sessionStorage.getItem("fanrag-token") || "";
  token.addEventListener("change", () => {
    sessionStorage.setItem("fanrag-token", token.value.trim());
    if (ingestStream) followIngest(); // again, with the new token
  });
  setUpTabs();
  setUpDialog();
  $("#ask-form").addEventListener("submit", onAsk);
  $("#zoom").addEventListener("change", () => drawDiagram(diagram.spans, { running: diagram.running }));
  $("#upload-form").addEventListener("submit", onUpload);
}

start();
