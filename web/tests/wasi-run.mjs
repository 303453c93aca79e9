// Runs a test binary built for wasm32-wasip1-threads under Node's WASI, on one thread: cargo's runner for
// scripts/wasm-test.sh (`node web/tests/wasi-run.mjs BINARY.wasm [ARGS...]`). The binary imports its memory
// (shared, as the target's atomics need): it is made here at the size the binary asks for. No thread can be
// started (`wasi.thread-spawn` fails), and the file system is the host's, read and written as is.
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";

const [file, ...args] = process.argv.slice(2);
const bytes = readFileSync(file);

// The limits (in 64 KiB pages) of the memory the binary imports, from its import section.
function importedMemoryLimits(bytes) {
  let at = 8;
  const leb = () => {
    let value = 0, shift = 0, byte;
    do { byte = bytes[at++]; value += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80);
    return value;
  };
  const limits = () => {
    const flags = bytes[at++];
    const min = leb();
    return { min, max: flags & 1 ? leb() : undefined };
  };
  while (at < bytes.length) {
    const id = bytes[at++];
    const size = leb();
    const end = at + size;
    if (id === 2) {
      for (let n = leb(); n > 0; n--) {
        for (const _name of ["module", "field"]) { const len = leb(); at += len; }
        const kind = bytes[at++];
        if (kind === 0) leb();                     // a function's type
        else if (kind === 1) { at++; limits(); }   // a table
        else if (kind === 2) return limits();      // the memory
        else if (kind === 3) at += 2;              // a global's type and mutability
      }
    }
    at = end;
  }
  throw new Error(`${file}: imports no memory`);
}

const { min, max } = importedMemoryLimits(bytes);
const memory = new WebAssembly.Memory({ initial: min, maximum: max ?? 16384, shared: true });
const wasi = new WASI({
  version: "preview1", args: [file, ...args], env: {}, preopens: { "/": "/" }, returnOnExit: true,
});
const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
  wasi_snapshot_preview1: wasi.wasiImport,
  env: { memory },
  wasi: { "thread-spawn": () => -1 },
});
process.exit(wasi.start({ exports: { ...instance.exports, memory } }));
