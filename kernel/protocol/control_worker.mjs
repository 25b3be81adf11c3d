// Heartbeat and control channel on their own thread: they answer while a cell keeps the main thread busy.
// An interrupt_request raises SIGINT at once (which breaks a running synchronous loop), then goes to the main
// thread like every other control message, which replies when it is free again.
import { parentPort, workerData } from 'node:worker_threads';
import { Reply, Router } from 'zeromq';

const { controlUrl, hbUrl } = workerData;
const hb = new Reply();
const control = new Router();
try {
  await hb.bind(hbUrl).catch((e) => Promise.reject(new Error(`cannot bind the heartbeat channel to ${hbUrl}: ${e.message}`)));
  await control.bind(controlUrl).catch((e) => Promise.reject(new Error(`cannot bind the control channel to ${controlUrl}: ${e.message}`)));
} catch (e) {
  hb.close();
  control.close();
  parentPort.postMessage({ type: 'failed', error: e.message });
  process.exit(1);
}

(async () => {
  for await (const frames of hb) await hb.send(frames);
})().catch(() => {});

let sending = Promise.resolve();
parentPort.on('message', (m) => {
  if (m.type === 'send') sending = sending.then(() => control.send(m.frames.map((f) => Buffer.from(f)))).catch(() => {});
  if (m.type === 'close') {
    // The shutdown reply is the last thing sent; then the sockets close and the thread ends on its own.
    sending.finally(() => {
      hb.close();
      control.close();
      parentPort.close();
    });
  }
});

parentPort.postMessage({ type: 'ready' });

for await (const frames of control) {
  const i = frames.findIndex((f) => f.toString() === '<IDS|MSG>');
  let type = '';
  try {
    type = JSON.parse(frames[i + 2].toString()).msg_type;
  } catch {}
  if (type === 'interrupt_request') process.kill(process.pid, 'SIGINT');
  parentPort.postMessage({ type: 'message', frames });
}
