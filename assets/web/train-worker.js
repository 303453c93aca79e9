// The training page's Web Worker: it runs lenet5's engine, compiled to WebAssembly (lenet5.wasm), so that the
// page stays responsive while it trains. The page sends commands; the worker answers with progress.
//
// Where the page is cross-origin isolated (its server sends COOP and COEP headers), it runs the multithreaded
// module, lenet5-threads.wasm, whose training steps are shared by `settings.threads` workers (threads.js starts
// them); elsewhere browsers allow no shared memory, and it runs lenet5.wasm on this one thread. Both give the
// same numbers.
//
//   page -> worker: {type: "load", dataset, files: {trainImages, trainLabels, testImages, testLabels}}
//                   {type: "load-images", name, zip: File | null, files: [{path, file: File}], settings}
//                   {type: "start", settings}   {type: "pause"}   {type: "resume"}   {type: "stop"}
//                   {type: "predict", pixels, width, height}      {type: "download"}
//   worker -> page: {type: "defaults", settings, threads: {available, max, reason, failures}}: once the engine is
//                   ready; `failures` names the BroadcastChannel on which a failed engine thread is reported
//                   {type: "download-progress", loaded, total}    {type: "loaded", train, test, classes}
//                   {type: "read-progress", done, total}  {type: "loaded", own: true, ..., skipped, bad, options}
//                   {type: "progress", status, kernels}           {type: "epoch", status}
//                   {type: "prediction", ...}   {type: "weights", bytes}   {type: "state", state}
//                   {type: "error", message}
"use strict";
importScripts("threads.js");

let engine = null;        // the module's exports
let pool = null;          // the multithreaded engine's helper threads (threads.js), or null
let state = "idle";       // idle, loading, ready, training, paused, stopped, done
let rateWindow = null;    // {time, images}: images/s over the last stretch
let loadedOnce = false;   // whether the engine holds a data set

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// Why a run here has one thread, or null where it may have more.
let oneThreadReason = !self.crossOriginIsolated
  ? "one thread: this page is not cross-origin isolated (its server sends no COOP/COEP headers), so the browser allows no shared memory"
  : typeof SharedArrayBuffer !== "function" ? "one thread: this browser has no SharedArrayBuffer" : null;

// Where a helper thread says that its engine thread failed (see threads.js): the page listens and ends this
// worker, which is then stuck waiting for that thread.
const failures = "lenet5-engine-" + Date.now() + "-" + Math.random().toString(36).slice(2);

async function fetchModule(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status} ${res.statusText}`);
  return WebAssembly.compile(await res.arrayBuffer());
}

async function instantiate() {
  if (!oneThreadReason) {
    try {
      const module = await fetchModule("lenet5-threads.wasm");
      const memory = new WebAssembly.Memory(ENGINE_MEMORY);
      pool = new HelperPool(module, memory, () => new Worker("train-helper.js"), failures);
      return startEngine(module, memory, pool);
    } catch (e) {
      pool = null;
      oneThreadReason = `one thread: the multithreaded engine did not start (${e.message})`;
    }
  }
  const module = await fetchModule("lenet5.wasm");
  const imports = { env: { now_seconds: () => performance.now() / 1000 } };
  return (await WebAssembly.instantiate(module, imports)).exports;
}

// The workers a run asks for, as the engine will take them; starts the helper threads they need (a run and its
// evaluation each keep workers - 1), before the engine waits for them.
async function prepareWorkers(settings) {
  if (!pool) return { ...settings, threads: 1 };
  const workers = Number(settings.threads), most = engine.max_workers();
  if (!Number.isInteger(workers) || workers < 1 || workers > most) {
    throw new Error(`workers must be a whole number from 1 to ${most}, got ${settings.threads}`);
  }
  // The engine takes no more than the batch size keeps busy (and says so): no helpers are started for the rest.
  // (As an unsigned 32-bit number, the import's type: the engine checks the batch size itself.)
  const busy = Math.min(workers, engine.useful_workers(settings.batch_size >>> 0));
  await pool.grow(2 * (busy - 1));
  return { ...settings, threads: workers };
}

// The engine's last result (a JSON text, an error message or bytes), copied out of its memory.
function resultBytes() {
  return new Uint8Array(engine.memory.buffer, engine.result_ptr(), engine.result_len()).slice();
}
function resultText() {
  return decoder.decode(resultBytes());
}
// Calls an export that returns a status (negative on failure, the message in the result).
function check(status) {
  if (status < 0) throw new Error(resultText());
  return status;
}
// Copies bytes into the engine's memory; returns [ptr, len]; free with release().
function place(bytes) {
  const ptr = engine.alloc(bytes.length);
  new Uint8Array(engine.memory.buffer, ptr, bytes.length).set(bytes);
  return [ptr, bytes.length];
}
function release(placed) {
  for (const [ptr, len] of placed) engine.dealloc(ptr, len);
}

function setState(s) {
  state = s;
  postMessage({ type: "state", state });
}

// Fetches one file, reporting progress over all of them.
async function download(url, progress) {
  const res = await fetch(url);
  if (!res.ok) {
    let detail = "";
    try { detail = (await res.json()).error || ""; } catch (_) { /* not JSON */ }
    throw new Error(`${url}: ${res.status} ${res.statusText}${detail ? ": " + detail : ""}`);
  }
  const total = Number(res.headers.get("Content-Length")) || 0;
  progress.total += total;
  const reader = res.body.getReader();
  const chunks = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    progress.loaded += value.length;
    postMessage({ type: "download-progress", loaded: progress.loaded, total: progress.total });
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

// The engine, instantiated once; the page's form takes its defaults from the run specification's.
const ready = instantiate().then(async exports => {
  engine = exports;
  check(engine.defaults());
  const threads = { available: !oneThreadReason, max: engine.max_workers(), reason: oneThreadReason, failures };
  postMessage({ type: "defaults", settings: JSON.parse(resultText()), threads });
  // A few made-up steps, so that the browser compiles the engine's fast code while the data loads rather than
  // during the first epoch, when every core trains (see `warm_up` in web/src/session.rs): on one worker, and on
  // two where a run will have them (their helper threads are then started now rather than at the first run).
  let workers = pool ? Math.min(2, navigator.hardwareConcurrency || 1) : 1;
  // Where the helpers do not start, the warm-up takes one worker, and a run that asks for more says why.
  if (workers > 1) await pool.grow(2 * (workers - 1)).catch(() => { workers = 1; });
  check(engine.warm_up(workers));
});

async function load(dataset, files) {
  setState("loading");
  await ready;
  const progress = { loaded: 0, total: 0 };
  const order = ["trainImages", "trainLabels", "testImages", "testLabels"];
  const bytes = await Promise.all(order.map(k => download(files[k], progress)));
  const placed = [...bytes, encoder.encode(dataset)].map(place);
  try {
    check(engine.load_data(...placed.flat()));
  } finally {
    release(placed);
  }
  const info = JSON.parse(resultText());
  loadedOnce = true;
  setState("ready");
  postMessage({ type: "loaded", ...info });
}

// Your own images, a zip archive or a folder's files, read here from the files the page was given (nothing
// leaves the browser) and handed to the engine, which lists, decodes and splits them as `lenet5 train
// --dataset` does. Each file's bytes go into a block the engine takes over, so nothing large is copied twice.
async function loadImages(m) {
  setState("loading");
  await ready;
  const limit = engine.max_folder_bytes();
  const total = m.zip ? m.zip.size : m.files.reduce((n, f) => n + (f.file ? f.file.size : 0), 0);
  if (total > limit) {
    throw new Error(`${m.name}: ${(total / 2 ** 20).toFixed(0)} MiB of files, more than the ${limit / 2 ** 20} MiB ` +
      "the page reads as one data set; train on it with lenet5 train --dataset");
  }
  // `place`d blocks the engine takes over, and which are then never released here.
  const handOver = place;
  let zip = [0, 0];
  if (m.zip) {
    zip = handOver(new Uint8Array(await m.zip.arrayBuffer()));
  } else {
    engine.clear_staged();
    for (const [i, f] of m.files.entries()) {
      const bytes = f.file ? new Uint8Array(await f.file.arrayBuffer()) : new Uint8Array(0);
      const path = [place(encoder.encode(f.path))];
      try { check(engine.stage_file(...path.flat(), ...handOver(bytes))); } finally { release(path); }
      if (i % 200 === 0 || i + 1 === m.files.length) postMessage({ type: "read-progress", done: i + 1, total: m.files.length });
    }
  }
  const placed = [encoder.encode(m.name), encoder.encode(JSON.stringify(m.settings))].map(place);
  try {
    check(engine.load_images(...placed.flat(), ...zip));
  } finally {
    release(placed);
  }
  const info = JSON.parse(resultText());
  loadedOnce = true;
  setState("ready");
  postMessage({ type: "loaded", own: true, ...info });
}

function status() {
  check(engine.status());
  return JSON.parse(resultText());
}

function kernels() {
  // conv1's weight comes first in the flat parameter block: 6 kernels of 5x5.
  return new Float32Array(engine.memory.buffer, engine.params_ptr(), 150).slice();
}

// Trains in pieces of about 40 ms, letting messages (pause, predict, stop) in between. The page is told the
// progress at most every quarter second: each message redraws it, and on a machine whose cores all train, that
// drawing is taken from a worker that the others then wait for at the step's next barrier (told every 40 ms, two
// workers trained 15,900 - 18,900 images/s in headless Chromium on two cores; every 250 ms, 19,500 - 23,100).
let batchesPerPiece = 8;
const PROGRESS_EVERY_MS = 250;
let progressPosted = 0;   // when the page was last told the progress (performance.now)
function trainPiece() {
  if (state !== "training") return;
  try {
    const t0 = performance.now();
    const s0 = status();
    if (s0.finished) { setState("done"); return; }
    check(engine.train(batchesPerPiece));
    const elapsed = performance.now() - t0;
    batchesPerPiece = Math.max(1, Math.min(500, Math.round(batchesPerPiece * 40 / Math.max(elapsed, 1))));
    let s = status();
    const now = performance.now();
    if (!rateWindow || now - rateWindow.time > 2000) rateWindow = { time: t0, images: s0.images_seen };
    s.images_per_second = (s.images_seen - rateWindow.images) / Math.max((now - rateWindow.time) / 1000, 1e-3);
    if (s.batch === s.batches) {
      // The epoch's last batches, then its evaluation.
      postMessage({ type: "progress", status: s, kernels: kernels() });
      check(engine.finish_epoch());
      s = status();
      rateWindow = null;
      progressPosted = performance.now();
      postMessage({ type: "epoch", status: s, kernels: kernels() });
      if (s.finished) { setState("done"); return; }
    } else if (now - progressPosted >= PROGRESS_EVERY_MS) {
      progressPosted = now;
      postMessage({ type: "progress", status: s, kernels: kernels() });
    }
  } catch (e) {
    setState("stopped");
    postMessage({ type: "error", message: e.message });
    return;
  }
  nextPiece();
}

// Runs the next piece as soon as the messages waiting have been handled: a message to itself, since a chain of
// zero-delay timeouts is held to 4 ms a link (a tenth of each piece, spent idle). One is queued at a time, so a
// pause and a resume between two pieces do not start a second chain.
const pieces = new MessageChannel();
let pieceQueued = false;
pieces.port1.onmessage = () => { pieceQueued = false; trainPiece(); };
function nextPiece() {
  if (!pieceQueued) { pieceQueued = true; pieces.port2.postMessage(null); }
}

self.onmessage = async (event) => {
  const m = event.data;
  try {
    switch (m.type) {
      case "load":
        await load(m.dataset, m.files);
        break;
      case "load-images":
        await loadImages(m);
        break;
      case "start": {
        const settings = await prepareWorkers(m.settings);
        const placed = [place(encoder.encode(JSON.stringify(settings)))];
        try { check(engine.configure(...placed.flat())); } finally { release(placed); }
        rateWindow = null;
        setState("training");
        progressPosted = performance.now();
        postMessage({ type: "progress", status: status(), kernels: kernels() });
        nextPiece();
        break;
      }
      case "pause":
        if (state === "training") setState("paused");
        break;
      case "resume":
        if (state === "paused") { setState("training"); rateWindow = null; nextPiece(); }
        break;
      case "stop":
        if (state === "training" || state === "paused") setState("stopped");
        break;
      case "predict": {
        const placed = [place(m.pixels)];
        let status;
        try { status = engine.predict(placed[0][0], m.width, m.height); } finally { release(placed); }
        postMessage(status < 0 ? { type: "prediction", error: resultText() } : { type: "prediction", ...JSON.parse(resultText()) });
        break;
      }
      case "download":
        check(engine.checkpoint());
        postMessage({ type: "weights", bytes: resultBytes() });
        break;
    }
  } catch (e) {
    postMessage({ type: "error", message: e.message });
    // A data set that cannot be loaded leaves the one loaded before, if any, in place.
    if (state === "loading") setState(loadedOnce ? "ready" : "idle");
  }
};
