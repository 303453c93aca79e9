// Trains in the WebAssembly engine under Node, through the exports the page's worker uses, and prints what a
// native run is compared with: the SHA-256 of the weights and momentum (as `tensors_sha256` in a
// last.safetensors), every epoch's metrics, and the training speed.
//
//   node web/tests/train.mjs WASM DATA_DIR [SETTINGS_JSON]
//   node web/tests/train.mjs --failing-thread lenet5-threads.wasm
//
// DATA_DIR holds the four IDX files (gzipped); SETTINGS_JSON are the page's settings (the recipe's by default).
// WASM is either module: lenet5.wasm, or lenet5-threads.wasm, which runs the `threads` of the settings on Node's
// worker threads through the page's own host code (assets/web/threads.js). With --failing-thread, an engine
// thread is started on a bad argument, traps, and its helper reports it on the pool's BroadcastChannel, which is
// printed.
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { Worker, isMainThread, parentPort } from "node:worker_threads";
import { fileURLToPath } from "node:url";

const host = new Function(
  readFileSync(new URL("../../assets/web/threads.js", import.meta.url), "utf8") +
    "\nreturn { startEngine, HelperPool, helperMain, ENGINE_MEMORY };",
)();

if (!isMainThread) {
  // A helper thread, as assets/web/train-helper.js is in the page.
  parentPort.once("message", (m) => host.helperMain(m, (r) => parentPort.postMessage(r)));
} else if (process.argv[2] === "--failing-thread") {
  await failingThread(process.argv[3]);
  process.exit(0);
} else {
  await main();
  process.exit(0);
}

async function failingThread(wasmPath) {
  const channel = "lenet5-test-" + process.pid;
  const heard = new Promise((resolve) => { new BroadcastChannel(channel).onmessage = (e) => resolve(e.data); });
  const { pool } = await start(new WebAssembly.Module(readFileSync(wasmPath)), 2, channel);
  // The argument of a thread's start is a pointer to its closure: this one is past the memory's end.
  if (pool.spawn(0xfffffff0) < 0) throw new Error("no helper took the thread");
  console.log("reported: " + JSON.stringify(await heard));
}

async function instantiate(wasmPath, threads) {
  const module = new WebAssembly.Module(readFileSync(wasmPath));
  if (!WebAssembly.Module.imports(module).some((i) => i.module === "wasi")) {
    return new WebAssembly.Instance(module, { env: { now_seconds: () => performance.now() / 1000 } }).exports;
  }
  return (await start(module, threads)).engine;
}

// The multithreaded engine on a shared memory, with the helpers `threads` workers need.
async function start(module, threads, channel) {
  const memory = new WebAssembly.Memory(host.ENGINE_MEMORY);
  const startHelper = () => {
    const w = new Worker(fileURLToPath(import.meta.url));
    w.unref();
    const helper = { postMessage: (m) => w.postMessage(m) };
    w.on("message", (data) => helper.onmessage({ data }));
    w.on("error", (e) => helper.onerror(e));
    return helper;
  };
  const pool = new host.HelperPool(module, memory, startHelper, channel);
  const engine = host.startEngine(module, memory, pool);
  // A training run and its evaluation each keep threads - 1 engine threads.
  await pool.grow(2 * (threads - 1));
  return { engine, pool };
}

async function main() {
  const [wasmPath, dataDir, settings = "{}"] = process.argv.slice(2);
  const engine = await instantiate(wasmPath, JSON.parse(settings).threads || 1);

  const result = () => new Uint8Array(engine.memory.buffer, engine.result_ptr(), engine.result_len()).slice();
  const text = () => new TextDecoder().decode(result());
  function check(status) {
    if (status < 0) throw new Error(text());
    return status;
  }
  function place(bytes) {
    const ptr = engine.alloc(bytes.length);
    new Uint8Array(engine.memory.buffer, ptr, bytes.length).set(bytes);
    return [ptr, bytes.length];
  }

  // As the page does first (and the bits must not change for it).
  if (check(engine.warm_up(JSON.parse(settings).threads || 1)) !== 32) {
    throw new Error("the warm-up trained on other than its 32 images");
  }

  const names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];
  const files = names.map(n => readFileSync(`${dataDir}/${n}.gz`));
  const placed = [...files, new TextEncoder().encode("mnist")].map(place);
  check(engine.load_data(...placed.flat()));
  for (const [ptr, len] of placed) engine.dealloc(ptr, len);
  check(engine.configure(...place(new TextEncoder().encode(settings))));

  const status = () => (check(engine.status()), JSON.parse(text()));
  let trainSeconds = 0;
  while (!status().finished) {
    const t0 = performance.now();
    check(engine.train(2 ** 31 - 1));
    trainSeconds += (performance.now() - t0) / 1000;
    check(engine.finish_epoch());
  }
  const s = status();
  const n = 61706 * 4;
  const hash = createHash("sha256");
  hash.update(new Uint8Array(engine.memory.buffer, engine.params_ptr(), n).slice());
  hash.update(new Uint8Array(engine.memory.buffer, engine.velocity_ptr(), n).slice());
  console.log(JSON.stringify({
    tensors_sha256: hash.digest("hex"),
    history: s.history.map(({ train_seconds, val_seconds, ...m }) => m),
    images_per_second: s.images_seen / trainSeconds,
    workers: s.workers,
  }));
}
