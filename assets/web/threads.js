// What the multithreaded engine (lenet5-threads.wasm) needs from its host: its imports, and a pool of helper
// threads for the engine's worker threads. A classic script with no DOM: the training worker and its helpers load
// it with importScripts, and the Node test runs the same text.
//
// The module is built for wasm32-wasip1-threads: every thread is an instance of it on one shared memory. The
// engine starts a worker thread through the import `wasi.thread-spawn(arg)`; that hands `arg` to a free helper
// (a Web Worker started beforehand: one started while the engine waits would never start), which calls the
// instance's `wasi_thread_start(tid, arg)` and becomes free again when the thread ends. Helpers wait on a shared
// Int32Array of three cells: state (FREE, CLAIMED, START, RUNNING), the thread's id, and its argument.
"use strict";

const HELPER_FREE = 0, HELPER_CLAIMED = 1, HELPER_START = 2, HELPER_RUNNING = 3;
// The module's memory: at most 1 GiB (what it declares), growing from 20 pages.
const ENGINE_MEMORY = { initial: 20, maximum: 16384, shared: true };
// WASI's error numbers used here.
const WASI_EAGAIN = 6;

// The imports of one instance. `spawn(arg)` starts an engine thread (returns its id, or a negative error).
function engineImports(memory, spawn) {
  const view = () => new DataView(memory.buffer);
  const decoder = new TextDecoder();
  return {
    env: { memory, now_seconds: () => performance.now() / 1000 },
    wasi_snapshot_preview1: {
      random_get(ptr, len) {
        // getRandomValues refuses shared memory and takes 64 KiB at a time.
        for (let at = 0; at < len; at += 65536) {
          const piece = crypto.getRandomValues(new Uint8Array(Math.min(65536, len - at)));
          new Uint8Array(memory.buffer, ptr + at, piece.length).set(piece);
        }
        return 0;
      },
      environ_sizes_get(count, size) {
        view().setUint32(count, 0, true);
        view().setUint32(size, 0, true);
        return 0;
      },
      environ_get: () => 0,
      clock_time_get(_id, _precision, out) {
        const ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
        view().setBigUint64(out, ns, true);
        return 0;
      },
      // Only a panic's message is ever written: it goes to the console.
      fd_write(_fd, iovs, count, written) {
        const v = view();
        let text = "", n = 0;
        for (let i = 0; i < count; i++) {
          const ptr = v.getUint32(iovs + 8 * i, true), len = v.getUint32(iovs + 8 * i + 4, true);
          text += decoder.decode(new Uint8Array(memory.buffer, ptr, len).slice());
          n += len;
        }
        console.error(text);
        v.setUint32(written, n, true);
        return 0;
      },
      proc_exit(code) {
        throw new Error(`the engine stopped (exit code ${code})`);
      },
      sched_yield: () => 0,
    },
    wasi: { "thread-spawn": spawn },
  };
}

// The threads the engine may start: `startHelper()` starts one helper (a Web Worker, or Node's) and returns it;
// `grow(n)` makes sure n exist and are ready. Helpers are never stopped: a new run reuses them. A helper whose
// engine thread fails says so on the BroadcastChannel named `channel`: the engine's first thread then waits for
// it for ever, inside a call that nothing on its own thread can interrupt, so whoever started the engine must
// listen there and end it.
class HelperPool {
  constructor(module, memory, startHelper, channel) {
    this.module = module;
    this.memory = memory;
    this.startHelper = startHelper;
    this.channel = channel;
    this.controls = [];
    this.nextTid = 1;
  }

  async grow(n) {
    while (this.controls.length < n) {
      const control = new Int32Array(new SharedArrayBuffer(12));
      const helper = this.startHelper();
      await new Promise((resolve, reject) => {
        helper.onmessage = (e) => (e.data && e.data.ready ? resolve() : reject(new Error(e.data.error)));
        helper.onerror = (e) => reject(new Error("a helper thread failed to start: " + (e.message || e)));
        helper.postMessage({ module: this.module, memory: this.memory, control, channel: this.channel });
      });
      this.controls.push(control);
    }
  }

  // The `wasi.thread-spawn` import: claims a free helper and starts it. A helper whose thread just ended may
  // take a moment to report free: it is waited for, up to a second.
  spawn(arg) {
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let waited = 0; waited < 1000; waited++) {
      for (const control of this.controls) {
        if (Atomics.compareExchange(control, 0, HELPER_FREE, HELPER_CLAIMED) === HELPER_FREE) {
          const tid = this.nextTid++;
          control[1] = tid;
          control[2] = arg;
          Atomics.store(control, 0, HELPER_START);
          Atomics.notify(control, 0);
          return tid;
        }
      }
      Atomics.wait(pause, 0, 0, 1);
    }
    return -WASI_EAGAIN;
  }
}

// The engine's first thread: its instance, set up as a WASI reactor is (its thread pointer, then its
// constructors), with `pool` for the threads it starts. It must be the memory's first instance: the first one
// initializes the memory and takes the static thread-local block; the others wait for a thread to run.
function startEngine(module, memory, pool) {
  const exports = new WebAssembly.Instance(module, engineImports(memory, (arg) => pool.spawn(arg))).exports;
  exports.__wasi_init_tp();
  exports.__wasm_call_ctors();
  return exports;
}

// A helper's life: instantiate the module on the shared memory, say so, then run every thread it is handed.
function helperMain(message, reply) {
  const { module, memory, control } = message;
  let exports;
  try {
    exports = new WebAssembly.Instance(module, engineImports(memory, () => -WASI_EAGAIN)).exports;
  } catch (e) {
    reply({ error: "a helper thread could not start the engine: " + e.message });
    return;
  }
  reply({ ready: true });
  for (;;) {
    const state = Atomics.load(control, 0);
    if (state !== HELPER_START) {
      Atomics.wait(control, 0, state);
      continue;
    }
    Atomics.store(control, 0, HELPER_RUNNING);
    try {
      exports.wasi_thread_start(control[1], control[2]);
    } catch (e) {
      // The engine aborts on a bug (its panics trap). Its first thread waits for this one, and never will
      // stop waiting: the page is told, to end the engine.
      console.error("an engine thread stopped: " + e.message);
      if (message.channel) new BroadcastChannel(message.channel).postMessage({ failed: e.message });
    }
    Atomics.store(control, 0, HELPER_FREE);
  }
}
