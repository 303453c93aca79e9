// Trains in the WebAssembly engine under Node, through the exports the page's worker uses, and prints what a
// native run is compared with: the SHA-256 of the weights and momentum (as `tensors_sha256` in a
// last.safetensors), every epoch's metrics, and the training speed.
//
//   node web/tests/train.mjs WASM DATA_DIR [SETTINGS_JSON]
//
// DATA_DIR holds the four IDX files (gzipped); SETTINGS_JSON are the page's settings (the recipe's by default).
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";

const [wasmPath, dataDir, settings = "{}"] = process.argv.slice(2);
const { instance } = await WebAssembly.instantiate(readFileSync(wasmPath), {
  env: { now_seconds: () => performance.now() / 1000 },
});
const engine = instance.exports;

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
hash.update(new Uint8Array(engine.memory.buffer, engine.params_ptr(), n));
hash.update(new Uint8Array(engine.memory.buffer, engine.velocity_ptr(), n));
console.log(JSON.stringify({
  tensors_sha256: hash.digest("hex"),
  history: s.history.map(({ train_seconds, val_seconds, ...m }) => m),
  images_per_second: s.images_seen / trainSeconds,
}));
