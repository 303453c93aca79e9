// Trains on the training page in Firefox, driven over WebDriver BiDi, and prints the epoch's val_acc and
// training speed: the page working in Firefox, and its speed there. Needs Node 20+ (with its WebSocket) and a
// Firefox started with remote debugging, the page served by `lenet5 serve` or any static server of `lenet5 site`:
//
//   lenet5 serve --weights models/lenet5-mnist.safetensors --addr 127.0.0.1:18765 &
//   firefox-esr --headless --remote-debugging-port=9333 --profile "$(mktemp -d)" about:blank &
//   node --experimental-websocket bench/firefox.mjs http://127.0.0.1:18765/train [IMAGES] [PORT] [WORKERS] [ZIP]
//
// WORKERS (default 1) share each step where the page is cross-origin isolated (as `lenet5 serve` serves it).
// ZIP, an image folder zipped, is chosen as your own images (with the page's folder defaults) and trained on
// instead of MNIST, with the batch size 8.
const [url, images = "20000", port = "9333", workers = "1", zip = ""] = process.argv.slice(2);
const ws = new WebSocket(`ws://127.0.0.1:${port}/session`);
let id = 0;
const pending = new Map();
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
};
const call = (method, params) => new Promise(res => { const i = ++id; pending.set(i, res); ws.send(JSON.stringify({ id: i, method, params })); });
await new Promise(r => ws.onopen = r);
await call("session.new", { capabilities: {} });
const context = (await call("browsingContext.getTree", {})).result.contexts[0].context;
await call("browsingContext.navigate", { context, url, wait: "complete" });
const evaluate = async (expression) =>
  (await call("script.evaluate", { expression, target: { context }, awaitPromise: false })).result?.result?.value;
async function waitFor(expression, ms) {
  const t0 = Date.now();
  for (;;) {
    const v = await evaluate(expression);
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out: ${expression}; the page says: ${await evaluate("document.getElementById('error').textContent")}`);
    await new Promise(r => setTimeout(r, 100));
  }
}
await waitFor("document.body.dataset.state === 'ready'", 60000);
if (zip) {
  const node = await call("script.evaluate", { expression: "document.getElementById('zip-input')", target: { context }, awaitPromise: false });
  const element = { sharedId: node.result.result.sharedId };
  const set = await call("input.setFiles", { context, element, files: [zip] });
  if (set.error) throw new Error(`input.setFiles: ${set.error}: ${set.message}`);
  await waitFor("document.getElementById('status').dataset.classes", 60000);
  console.log(await evaluate("document.getElementById('status').textContent"));
  await evaluate("document.getElementById('batch').value = '8'");
}
await evaluate(`const set = (id, v) => { document.getElementById(id).value = v; };
  set('epochs', '1'); set('head', 'logits'); set('lr', '0.05'); set('limit', '${images}');
  if (!document.getElementById('workers').disabled) set('workers', '${workers}');
  document.getElementById('start').click()`);
const acc = await waitFor("document.querySelector('#epochs-table tr')?.dataset.valAcc", 300000);
await waitFor("document.body.dataset.state === 'done'", 300000);
const seconds = await evaluate("document.querySelector('#epochs-table tr').dataset.trainSeconds");
const ran = await evaluate("document.getElementById('epoch-text').dataset.workers");
console.log(`${await evaluate("navigator.userAgent")}: val_acc ${acc}, ${Math.round(Number(images) / Number(seconds))} training images/s on ${ran} worker(s)`);
await call("session.end", {});
ws.close();
process.exit(0);
