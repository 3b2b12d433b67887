'use strict';
// Node.js `ws` clients against ringcast, run by test_compression.py:
// a subscriber and a publisher that offer permessage-deflate (ws's
// default), and a subscriber that does not. The publisher sends one large
// event (ws compresses messages over its 1 KiB threshold); both subscribers
// receive it. Prints one JSON line of what they saw, for the test to judge.
//
// Usage: node deflate_clients.js WS_URL TOPIC

const WebSocket = require('ws');

const [url, topic] = process.argv.slice(2);
const TIMEOUT_MS = 15000;

function open(perMessageDeflate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

// The next frame of `type` (with `request_id`, if given) this client gets.
function next(ws, type, requestId) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    const onMessage = (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'error') {
        reject(new Error(`error frame: ${JSON.stringify(frame)}`));
      } else if (frame.type === type && (requestId === undefined || frame.request_id === requestId)) {
        clearTimeout(timer);
        ws.off('message', onMessage);
        resolve(frame);
      }
    };
    ws.on('message', onMessage);
  });
}

async function request(ws, frame) {
  const reply = next(ws, 'ack', frame.request_id);
  ws.send(JSON.stringify(frame));
  return reply;
}

// An order with line items: about 10 KiB of JSON that compresses well.
function bigPayload() {
  const items = [];
  for (let n = 1; n <= 200; n += 1) {
    items.push({ sku: `SKU-${String(n).padStart(5, '0')}`, qty: (n % 7) + 1, price: ((n * 13) % 90) + 0.99 });
  }
  return { order: 48213, items, note: 'please leave the parcel at the side door' };
}

async function main() {
  const compressed = await open(true);
  const plain = await open(false);
  const publisher = await open(true);
  await request(compressed, { type: 'subscribe', topic, request_id: 's1' });
  await request(plain, { type: 'subscribe', topic, request_id: 's2' });
  const readBefore = [compressed, plain].map((ws) => ws._socket.bytesRead);
  const events = [next(compressed, 'event'), next(plain, 'event')];
  const payload = bigPayload();
  const message = { id: '550e8400-e29b-41d4-a716-446655440000', payload };
  await request(publisher, { type: 'publish', topic, message, request_id: 'p1' });
  const [compressedEvent, plainEvent] = await Promise.all(events);
  const [compressedBytes, plainBytes] = [compressed, plain].map((ws, i) => ws._socket.bytesRead - readBefore[i]);
  const expected = JSON.stringify(payload);
  console.log(JSON.stringify({
    extensions: { compressed: compressed.extensions, plain: plain.extensions, publisher: publisher.extensions },
    intact: {
      compressed: JSON.stringify(compressedEvent.message.payload) === expected,
      plain: JSON.stringify(plainEvent.message.payload) === expected,
    },
    payloadBytes: expected.length,
    socketBytesForTheEvent: { compressed: compressedBytes, plain: plainBytes },
  }));
  for (const ws of [compressed, plain, publisher]) ws.close(1000);
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
