// A helper thread of the training worker: it runs the multithreaded engine's worker threads (see threads.js).
"use strict";
importScripts("threads.js");
self.onmessage = (event) => helperMain(event.data, (reply) => postMessage(reply));
