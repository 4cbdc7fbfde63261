// ravel queue driven by a real NSQ client: nsqjs 0.13.0 (pinned in package.json / package-lock.json).
// Run by tests/scripts/check_queue_nsqjs.sh, which starts `ravel queue` and passes its ports:
//   node queue_nsqjs.test.mjs TCP_PORT HTTP_PORT
// Uses node's built-in test runner (node:test); exits non-zero if any test fails.
//
// What nsqjs does on the wire (reference nsq-protocol.md section 1.7): IDENTIFY with
// feature_negotiation, heartbeat_interval = heartbeatInterval (seconds) * 1000 and
// msg_timeout = messageTimeout (ms); SUB, RDY maxInFlight, FIN/REQ/TOUCH, NOP on every
// _heartbeat_, and CLS on close() (Reader and Writer alike).  nsqjs knows neither of
// ravel's IDENTIFY extensions, so everything here must behave as nsqd v1.3.0 does.
//
// Every wait is bounded (waitFor / next with a deadline); minimum-delay checks
// ("not before 800 ms") compare timestamps, they never rely on a sleep alone.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import nsq from 'nsqjs';

const tcpPort = Number(process.argv[2]);
const httpPort = Number(process.argv[3]);
if (!Number.isInteger(tcpPort) || tcpPort <= 0 || !Number.isInteger(httpPort) || httpPort <= 0) {
  console.error('usage: node queue_nsqjs.test.mjs TCP_PORT HTTP_PORT');
  process.exit(2);
}
const HOST = '127.0.0.1';
const ADDR = `${HOST}:${tcpPort}`;
const HTTP = `http://${HOST}:${httpPort}`;
const TEST_TIMEOUT_MS = 20000;
const WAIT_MS = 8000; // bound for "this must arrive"
// Timers of node and of the server may round differently by a millisecond or two.
const SLACK_MS = 15;

const run = Date.now().toString(36); // topic names are unique per run
const topicName = (what) => `nsqjs_${what}_${run}`;

const open = []; // readers and writers to close at the end
after(() => {
  for (const c of open) {
    try { c.close(); } catch { /* already closed */ }
  }
});

// ---- helpers ---------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

async function waitFor(cond, what, ms = WAIT_MS, every = 25) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

async function openWriter() {
  const w = new nsq.Writer(HOST, tcpPort);
  w.errors = [];
  open.push(w);
  const ready = new Promise((resolve, reject) => {
    w.once('ready', resolve);
    w.once('error', reject);
  });
  w.on('error', (e) => w.errors.push(String(e)));
  w.connect();
  await withTimeout(ready, WAIT_MS, 'Writer ready');
  return w;
}

const publish = (w, topic, msgs) =>
  withTimeout(new Promise((resolve, reject) => w.publish(topic, msgs, (err) => (err ? reject(err) : resolve()))),
    WAIT_MS, `publish to ${topic}`);

// nsqjs 0.13.0's Writer.deferPublish(topic, 'body', ms) throws "Expect an array of messages to
// produceMessages" (it does not wrap a single message as publish() does): pass a 1-element array,
// which it sends as DPUB topic ms.
const deferPublish = (w, topic, msg, ms) =>
  withTimeout(new Promise((resolve, reject) => w.deferPublish(topic, [msg], ms, (err) => (err ? reject(err) : resolve()))),
    WAIT_MS, `deferPublish to ${topic}`);

// A Reader whose messages are queued for next(); errors and closes are recorded.
async function openReader(topic, channel, options = {}) {
  const r = new nsq.Reader(topic, channel, { nsqdTCPAddresses: [ADDR], lookupdPollInterval: 60, ...options });
  open.push(r);
  r.errors = [];
  r.closedEvents = 0;
  const queue = [];
  const waiters = [];
  r.on('message', (msg) => {
    const item = { msg, at: Date.now(), id: msg.id, attempts: msg.attempts, body: msg.body.toString() };
    const w = waiters.shift();
    if (w) w(item); else queue.push(item);
  });
  r.on('error', (e) => r.errors.push(String(e)));
  r.on('nsqd_closed', () => { r.closedEvents += 1; });
  // next(ms): the next message, or an error after ms.
  r.next = (ms = WAIT_MS) => {
    if (queue.length) return Promise.resolve(queue.shift());
    let w;
    const p = new Promise((resolve) => { w = resolve; waiters.push(w); });
    return withTimeout(p, ms, `a message on ${topic}/${channel}`).catch((e) => {
      const i = waiters.indexOf(w);
      if (i >= 0) waiters.splice(i, 1);
      throw e;
    });
  };
  // nothingFor(ms): true if no message arrives within ms (a bounded negative check).
  r.nothingFor = async (ms) => {
    try {
      const m = await r.next(ms);
      return m;
    } catch {
      return null;
    }
  };
  const ready = new Promise((resolve, reject) => {
    r.once('ready', resolve);
    r.once('error', reject);
  });
  r.connect();
  await withTimeout(ready, WAIT_MS, `Reader ${topic}/${channel} subscribed`);
  return r;
}

// The nsqjs NSQDConnection and socket under a Reader with one nsqd (internal API of the pinned 0.13.0).
function readerConn(r) {
  const cr = r.readerRdy.connections[0];
  assert.ok(cr, 'the Reader has a connection');
  return cr.conn;
}

async function httpGet(path) {
  const res = await withTimeout(fetch(`${HTTP}${path}`), WAIT_MS, `GET ${path}`);
  return { status: res.status, text: await res.text() };
}

async function stats() {
  const { status, text } = await httpGet('/stats?format=json');
  assert.equal(status, 200, `/stats?format=json answers 200 (got ${status}: ${text.slice(0, 200)})`);
  return JSON.parse(text);
}

const findTopic = (s, t) => (s.topics || []).find((x) => x.topic_name === t);
const findChannel = (s, t, c) => (findTopic(s, t)?.channels || []).find((x) => x.channel_name === c);

const isId = (id) => typeof id === 'string' && /^[0-9a-f]{16}$/.test(id);

// ---- tests -----------------------------------------------------------------

test('publish (PUB) and consume: body, attempts 1, 16-hex id, timestamp', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('pub');
  const w = await openWriter();
  const before = BigInt(Date.now() - 1000) * 1000000n;
  await publish(w, topic, 'hello nsqjs');
  const r = await openReader(topic, 'c', { maxInFlight: 1 });
  const m = await r.next();
  assert.equal(m.body, 'hello nsqjs');
  assert.equal(m.attempts, 1);
  assert.ok(isId(m.id), `message id ${JSON.stringify(m.id)} is 16 hex characters`);
  const ts = m.msg.timestamp; // BigInt nanoseconds since the epoch, set at publish
  assert.ok(ts >= before && ts <= BigInt(Date.now() + 1000) * 1000000n, `timestamp ${ts} is the publish time`);
  m.msg.finish();
  // A FIN'd message is not delivered again; the server sees the FIN (channel in flight back to 0).
  await waitFor(async () => findChannel(await stats(), topic, 'c')?.in_flight_count === 0, 'in_flight_count 0 after FIN');
  assert.equal(await r.nothingFor(300), null, 'no redelivery after FIN');
  assert.deepEqual(r.errors, []);
  assert.deepEqual(w.errors, []);
  r.close();
});

test('MPUB (array publish) and consume with maxInFlight 4', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('mpub');
  const w = await openWriter();
  const bodies = Array.from({ length: 20 }, (_, i) => `m-${i}`);
  await publish(w, topic, bodies); // an array is sent as one MPUB
  const r = await openReader(topic, 'c', { maxInFlight: 4 });
  const got = new Map();
  let holding = [];
  let maxHeld = 0;
  // Hold what arrives, finish it in groups: the server must never have more than 4 out.
  while (got.size < bodies.length) {
    const m = await r.next();
    assert.equal(m.attempts, 1, `${m.body} first delivery`);
    assert.ok(!got.has(m.body), `${m.body} delivered once`);
    got.set(m.body, m.id);
    holding.push(m);
    maxHeld = Math.max(maxHeld, holding.length);
    assert.ok(holding.length <= 4, `at most maxInFlight=4 unfinished messages (have ${holding.length})`);
    if (holding.length === 4 || got.size === bodies.length) {
      // Nothing more may arrive while 4 are held.
      if (holding.length === 4) assert.equal(await r.nothingFor(150), null, 'no 5th message while 4 are in flight');
      for (const h of holding) h.msg.finish();
      holding = [];
    }
  }
  assert.deepEqual([...got.keys()].sort(), [...bodies].sort());
  assert.equal(new Set(got.values()).size, bodies.length, 'every message has its own id');
  assert.equal(maxHeld, 4, 'the server filled all 4 RDY slots');
  assert.deepEqual(r.errors, []);
  r.close();
});

test('DPUB (deferPublish): delivered no earlier than its delay', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('dpub');
  const w = await openWriter();
  const r = await openReader(topic, 'c', { maxInFlight: 2 });
  const DELAY = 1200;
  const sent = Date.now();
  await deferPublish(w, topic, 'deferred', DELAY);
  await publish(w, topic, 'immediate');
  const first = await r.next();
  assert.equal(first.body, 'immediate', 'the immediate message overtakes the deferred one');
  assert.ok(first.at - sent < DELAY, `immediate message arrived in ${first.at - sent} ms`);
  first.msg.finish();
  const d = await r.next(DELAY + WAIT_MS);
  assert.equal(d.body, 'deferred');
  assert.equal(d.attempts, 1);
  const waited = d.at - sent;
  assert.ok(waited >= DELAY - SLACK_MS, `deferred message came after ${waited} ms, not before ${DELAY}`);
  assert.ok(waited < DELAY + 3000, `deferred message came after ${waited} ms (should be close to ${DELAY})`);
  d.msg.finish();
  assert.deepEqual(r.errors, []);
  r.close();
});

test('touch() keeps a long handler\'s message from timing out (msg_timeout 1000)', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('touch');
  const w = await openWriter();
  await publish(w, topic, 'slow job');
  const r = await openReader(topic, 'c', { maxInFlight: 1, messageTimeout: 1000 });
  const m = await r.next();
  assert.equal(m.msg.msgTimeout, 1000, 'the server granted msg_timeout 1000 in the IDENTIFY reply');
  // A 2.6 s handler that touches every 400 ms: 2.6 times the timeout.
  const until = m.at + 2600;
  let touches = 0;
  while (Date.now() < until) {
    const again = await r.nothingFor(400);
    assert.equal(again, null, `no redelivery while touched (got ${again && again.body}, attempts ${again && again.attempts})`);
    m.msg.touch();
    touches += 1;
  }
  m.msg.finish();
  assert.ok(touches >= 6);
  // Well past the timeout after FIN: still nothing, and the FIN was accepted (no E_FIN_FAILED).
  assert.equal(await r.nothingFor(1300), null, 'no redelivery after FIN');
  assert.deepEqual(r.errors, [], 'no E_TOUCH_FAILED / E_FIN_FAILED');
  const ch = findChannel(await stats(), topic, 'c');
  assert.equal(ch.timeout_count, 0, '/stats: no timeout on the touched message');
  assert.equal(ch.in_flight_count, 0);
  r.close();
});

test('requeue(delay): comes back no earlier than the delay, same id, attempts 2', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('req');
  const w = await openWriter();
  await publish(w, topic, 'retry me');
  const r = await openReader(topic, 'c', { maxInFlight: 1 });
  const m1 = await r.next();
  assert.equal(m1.attempts, 1);
  const DELAY = 800;
  const reqAt = Date.now();
  m1.msg.requeue(DELAY, false); // REQ id 800; backoff off so RDY stays 1
  const m2 = await r.next(DELAY + WAIT_MS);
  const waited = m2.at - reqAt;
  assert.equal(m2.body, 'retry me');
  assert.equal(m2.id, m1.id, 'same id on redelivery');
  assert.equal(m2.attempts, 2, 'attempts incremented');
  assert.equal(m2.msg.timestamp, m1.msg.timestamp, 'timestamp kept on requeue');
  assert.ok(waited >= DELAY - SLACK_MS, `requeued message came after ${waited} ms, not before ${DELAY}`);
  assert.ok(waited < DELAY + 3000, `requeued message came after ${waited} ms`);
  m2.msg.finish();
  await waitFor(async () => findChannel(await stats(), topic, 'c')?.in_flight_count === 0, 'FIN seen');
  const ch = findChannel(await stats(), topic, 'c');
  assert.equal(ch.requeue_count, 1, '/stats requeue_count');
  assert.equal(ch.deferred_count, 0);
  assert.deepEqual(r.errors, []);
  r.close();
});

test('timeout and redelivery: not finished within messageTimeout -> same id, attempts 2', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('timeout');
  const w = await openWriter();
  await publish(w, topic, 'forgotten');
  const r = await openReader(topic, 'c', { maxInFlight: 1, messageTimeout: 1000 });
  const m1 = await r.next();
  assert.equal(m1.attempts, 1);
  // Left alone: nsqd requeues it after msg_timeout and, since a timeout frees the RDY slot,
  // sends it to this same consumer again.  nsqjs did not ask for timeout_notify: no frame type 3.
  const m2 = await r.next(1000 + WAIT_MS);
  const waited = m2.at - m1.at;
  assert.equal(m2.body, 'forgotten');
  assert.equal(m2.id, m1.id, 'same id on redelivery');
  assert.equal(m2.attempts, 2, 'attempts incremented');
  assert.ok(waited >= 1000 - SLACK_MS, `redelivered after ${waited} ms, not before the 1000 ms timeout`);
  assert.ok(waited < 1000 + 2000, `redelivered after ${waited} ms: the timeout fired late`);
  m2.msg.finish();
  await waitFor(async () => findChannel(await stats(), topic, 'c')?.in_flight_count === 0, 'FIN seen');
  const ch = findChannel(await stats(), topic, 'c');
  assert.equal(ch.timeout_count, 1, '/stats timeout_count');
  assert.deepEqual(r.errors, [], 'no error frames (an unknown frame type would show up here)');
  r.close();
});

test('heartbeats (heartbeatInterval 1 s): nsqjs answers them and the idle connection stays up', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('hb');
  const w = await openWriter();
  const r = await openReader(topic, 'c', { maxInFlight: 1, heartbeatInterval: 1 });
  const conn = readerConn(r);
  let beats = 0;
  conn.conn.on('data', (d) => {
    for (let i = d.indexOf('_heartbeat_'); i >= 0; i = d.indexOf('_heartbeat_', i + 1)) beats += 1;
  });
  const start = Date.now();
  // 3.5 s of idling: 3 heartbeats are due; the server drops a client that misses two,
  // so the connection is still up only if nsqjs's NOPs reach it.
  await waitFor(() => Date.now() - start >= 3500 && beats >= 3, '3 heartbeats within 3.5 s', 6000, 50);
  assert.ok(beats <= 5, `${beats} heartbeats in ${Date.now() - start} ms at a 1 s interval`);
  assert.equal(r.closedEvents, 0, 'the Reader saw no nsqd_closed');
  assert.equal(conn.statemachine.current_state_name, 'READY_RECV');
  const ch = findChannel(await stats(), topic, 'c');
  assert.equal(ch?.client_count, 1, '/stats: the idle client is still connected');
  // And the connection still works.
  await publish(w, topic, 'after idling');
  const m = await r.next();
  assert.equal(m.body, 'after idling');
  m.msg.finish();
  assert.deepEqual(r.errors, []);
  r.close();
  // The counterpart, with a raw connection that asks for the same 1 s interval and never sends
  // NOP: nsqd closes it after two missed heartbeats (read deadline 2 x interval), so the check
  // above shows nsqjs's NOPs being honoured, not a server that never drops idle clients.
  const t0 = Date.now();
  const frames = await rawExchange([
    Buffer.from('  V2'),
    identifyCmd({ client_id: 'mute', feature_negotiation: true, heartbeat_interval: 1000 }),
    Buffer.from(`SUB ${topic} mute\n`),
  ], 6000);
  const lasted = Date.now() - t0;
  assert.equal(frames.closed, true, `a client that never answers heartbeats is dropped (frames ${JSON.stringify(frames)})`);
  assert.ok(lasted >= 1500 && lasted < 4500, `dropped after ${lasted} ms (nsqd: about 2 x 1000 ms)`);
  assert.ok(frames.filter((f) => f.type === 0 && f.data === '_heartbeat_').length >= 1, 'it was sent heartbeats');
});

test('clean close: Reader.close() sends CLS, leaves; its unfinished message goes back at once', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('close');
  const w = await openWriter();
  await publish(w, topic, ['a', 'b']);
  const r1 = await openReader(topic, 'c', { maxInFlight: 1 });
  const m = await r1.next();
  m.msg.finish();
  const held = await r1.next(); // left unfinished
  const closed = new Promise((resolve) => r1.once('nsqd_closed', resolve));
  r1.close();
  await withTimeout(closed, WAIT_MS, 'nsqd_closed after Reader.close()');
  assert.deepEqual(r1.errors, [], 'no error frame in reply to the Reader\'s CLS');
  // nsqjs drops the socket right after CLS; what nsqd answers a subscribed CLS (CLOSE_WAIT, and the
  // connection stays open) is checked with a raw connection on another channel.
  const frames = await rawExchange([
    Buffer.from('  V2'),
    identifyCmd({ client_id: 'raw', feature_negotiation: true, heartbeat_interval: 30000 }),
    Buffer.from(`SUB ${topic} rawcls\n`),
    Buffer.from('CLS\n'),
  ], 500);
  assert.deepEqual(frames.slice(1).map((f) => [f.type, f.data]), [[0, 'OK'], [0, 'CLOSE_WAIT']]);
  assert.equal(frames.closed, false, 'the connection stays open after CLOSE_WAIT (the client closes it)');
  await waitFor(async () => (findChannel(await stats(), topic, 'c')?.client_count ?? -1) === 0, 'client_count 0 after close');
  // ravel requeues a departed consumer's in-flight messages at once (docs/queue.md; nsqd waits
  // for their 60 s timeout), so a new consumer gets it straight away, attempts 2.
  const r2 = await openReader(topic, 'c', { maxInFlight: 1 });
  const again = await r2.next(3000);
  assert.equal(again.body, held.body);
  assert.equal(again.id, held.id);
  assert.equal(again.attempts, 2);
  again.msg.finish();
  r2.close();
});

test('clean close: Writer.close() (CLS on a producer) - E_INVALID as nsqd, server unaffected', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('wclose');
  const w = await openWriter();
  await publish(w, topic, 'before close');
  const closed = new Promise((resolve) => w.once('closed', resolve));
  w.close(); // nsqjs writes CLS, ends and destroys the socket without waiting for a reply
  await withTimeout(closed, WAIT_MS, 'Writer closed event');
  assert.deepEqual(w.errors, [], 'Writer.close() surfaced no error');
  // nsqjs does not wait for the reply, so look at it with a raw connection doing what it does:
  // "  V2", the same IDENTIFY, then CLS. nsqd v1.3.0 answers a fatal
  // "E_INVALID cannot CLS in current state" and closes the connection (reference 1.4).
  const frames = await rawExchange([
    Buffer.from('  V2'),
    identifyCmd({ client_id: 'raw', feature_negotiation: true, heartbeat_interval: 30000, user_agent: 'nsqjs/0.13.0' }),
    Buffer.from('CLS\n'),
  ]);
  assert.equal(frames.length, 2, `two frames: IDENTIFY reply and the CLS error (got ${JSON.stringify(frames)})`);
  assert.equal(frames[0].type, 0);
  JSON.parse(frames[0].data); // the IDENTIFY JSON
  assert.deepEqual(frames[1], { type: 1, data: 'E_INVALID cannot CLS in current state' });
  assert.equal(frames.closed, true, 'the server closed the connection after E_INVALID');
  // The server is unaffected: a new Writer publishes, a Reader gets both messages.
  const w2 = await openWriter();
  await publish(w2, topic, 'after close');
  const r = await openReader(topic, 'c', { maxInFlight: 2 });
  const got = [await r.next(), await r.next()].map((x) => { x.msg.finish(); return x.body; }).sort();
  assert.deepEqual(got, ['after close', 'before close']);
  assert.deepEqual(w2.errors, []);
  w2.close();
  r.close();
  const ping = await httpGet('/ping');
  assert.equal(ping.status, 200);
  assert.equal(ping.text, 'OK');
});

function identifyCmd(obj) {
  const body = Buffer.from(JSON.stringify(obj));
  const len = Buffer.alloc(4);
  len.writeInt32BE(body.length);
  return Buffer.concat([Buffer.from('IDENTIFY\n'), len, body]);
}

// Send chunks one by one (the first two together, each further one after a reply frame), collect
// reply frames until the server closes or ms pass. frames.closed tells whether the server closed.
function rawExchange(chunks, ms = 3000) {
  return new Promise((resolve, reject) => {
    const frames = [];
    let buf = Buffer.alloc(0);
    const sock = net.connect(tcpPort, HOST);
    let timer = setTimeout(() => { timer = null; sock.destroy(); }, ms);
    sock.on('connect', () => {
      sock.write(Buffer.concat([chunks[0], chunks[1]]));
    });
    let sent = 2;
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8) {
        const size = buf.readInt32BE(0);
        if (buf.length < 4 + size) break;
        frames.push({ type: buf.readInt32BE(4), data: buf.subarray(8, 4 + size).toString() });
        buf = buf.subarray(4 + size);
        if (sent < chunks.length) sock.write(chunks[sent++]);
      }
    });
    sock.on('error', (e) => { if (!['ECONNRESET', 'EPIPE'].includes(e.code)) { clearTimeout(timer); reject(e); } });
    // closed: the server closed it (false: still open when ms ran out and we closed it).
    sock.on('close', () => { frames.closed = timer !== null; clearTimeout(timer); resolve(frames); });
  });
}

test('HTTP API: POST /pub reaches an nsqjs Reader; GET /stats?format=json with nsqd\'s field names', { timeout: TEST_TIMEOUT_MS }, async () => {
  const topic = topicName('http');
  const r = await openReader(topic, 'web', { maxInFlight: 3 });
  const res = await withTimeout(fetch(`${HTTP}/pub?topic=${topic}`, { method: 'POST', body: 'via http' }), WAIT_MS, 'POST /pub');
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'OK');
  const m = await r.next();
  assert.equal(m.body, 'via http');
  assert.equal(m.attempts, 1);
  // Stats while the message is in flight (not finished yet).
  const s = await stats();
  assert.equal(typeof s.version, 'string');
  assert.equal(s.health, 'OK');
  assert.equal(typeof s.start_time, 'number');
  const t = findTopic(s, topic);
  assert.ok(t, `/stats lists topic ${topic}`);
  for (const k of ['topic_name', 'depth', 'backend_depth', 'message_count', 'message_bytes', 'paused', 'channels', 'e2e_processing_latency']) {
    assert.ok(k in t, `topic field ${k}`);
  }
  assert.equal(t.message_count, 1);
  assert.equal(t.message_bytes, 'via http'.length);
  const ch = findChannel(s, topic, 'web');
  assert.ok(ch, '/stats lists channel web');
  for (const k of ['channel_name', 'depth', 'backend_depth', 'in_flight_count', 'deferred_count', 'message_count',
    'requeue_count', 'timeout_count', 'client_count', 'clients', 'paused', 'e2e_processing_latency']) {
    assert.ok(k in ch, `channel field ${k}`);
  }
  assert.equal(ch.depth, 0);
  assert.equal(ch.in_flight_count, 1);
  assert.equal(ch.message_count, 1);
  assert.equal(ch.client_count, 1);
  assert.equal(ch.clients.length, 1);
  const c = ch.clients[0];
  for (const k of ['client_id', 'hostname', 'version', 'remote_address', 'state', 'ready_count', 'in_flight_count',
    'message_count', 'finish_count', 'requeue_count', 'connect_ts', 'sample_rate', 'deflate', 'snappy', 'user_agent', 'tls']) {
    assert.ok(k in c, `client field ${k}`);
  }
  assert.equal(c.user_agent, 'nsqjs/0.13.0');
  assert.equal(c.version, 'V2');
  assert.equal(c.ready_count, 3, 'ready_count = maxInFlight');
  assert.equal(c.in_flight_count, 1);
  assert.equal(c.message_count, 1);
  assert.equal(c.finish_count, 0);
  m.msg.finish();
  await waitFor(async () => findChannel(await stats(), topic, 'web')?.clients?.[0]?.finish_count === 1, 'finish_count 1 in /stats');
  const after = findChannel(await stats(), topic, 'web');
  assert.equal(after.in_flight_count, 0);
  assert.equal(after.depth, 0);
  r.close();
});
