// ravel coord driven by a real Node Redis client: ioredis (pinned in package.json).
// Run by tests/scripts/check_coord_ioredis.sh, which starts coord and passes its port:
//   node coord_ioredis.test.mjs PORT
// Uses node's built-in test runner (node:test); exits non-zero if any test fails.
//
// Integers are read with stringNumbers (fencing tokens may exceed 2^53) and compared as BigInt.
// Every wait polls observed state (LOCK.INFO) with a bound; nothing rests on a sleep.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import Redis from 'ioredis';

const port = Number(process.argv[2] ?? process.env.COORD_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node coord_ioredis.test.mjs PORT');
  process.exit(2);
}

const TEST_TIMEOUT_MS = 20000;
const POLL_BOUND_MS = 10000;

const clients = [];

// A client that fails fast instead of reconnecting forever; ready check (INFO) on.
async function client(name) {
  const r = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    connectionName: name,
    enableReadyCheck: true,
    stringNumbers: true,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
  });
  r.on('error', () => {}); // errors surface through the command promises
  clients.push(r);
  await r.connect();
  return r;
}

after(() => {
  // Not twice: a second disconnect() arms ioredis's 2 s "still open" timer on a closed stream.
  for (const r of clients) if (r.status !== 'end') r.disconnect();
});

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// Poll fn() until it returns a truthy value: every 50 ms, at most POLL_BOUND_MS.
async function until(what, fn) {
  const deadline = Date.now() + POLL_BOUND_MS;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${POLL_BOUND_MS} ms waiting for ${what}`);
    await sleep(50);
  }
}

// A flat RESP2 map [k, v, k, v...] as an object (nested arrays left as they are).
function flat(arr) {
  const o = {};
  for (let i = 0; i + 1 < arr.length; i += 2) o[arr[i]] = arr[i + 1];
  return o;
}

async function lockInfo(r, name) {
  const a = await r.call('LOCK.INFO', name);
  return a === null ? null : flat(a);
}

async function waiterCount(r, name) {
  const i = await lockInfo(r, name);
  return i === null ? 0 : Number(i.waiter_count);
}

async function openSession(r, service, ttlMs = 30000) {
  const sid = await r.call('SESSION.OPEN', ttlMs, 'SERVICE', service, 'REPLICA', 'r1',
    'HOST', os.hostname(), 'PID', process.pid, 'ADMIN', 'http://127.0.0.1:9/debug');
  assert.match(sid, /^[1-9][0-9]*$/, `SESSION.OPEN answered ${sid}`);
  return sid;
}

// Track whether a promise has settled, without awaiting it.
function track(p) {
  const t = { settled: false, value: undefined, error: undefined };
  t.promise = p.then(
    (v) => { t.settled = true; t.value = v; return v; },
    (e) => { t.settled = true; t.error = e; throw e; });
  t.promise.catch(() => {}); // observed by the test when it matters
  return t;
}

let admin;

test('connect: ioredis ready check (INFO), CLIENT SETNAME/SETINFO, PING', { timeout: TEST_TIMEOUT_MS }, async () => {
  admin = await client('node-admin');
  assert.equal(admin.status, 'ready');
  assert.equal(await admin.ping(), 'PONG');
  assert.equal(await admin.client('GETNAME'), 'node-admin');
  const info = await admin.info();
  assert.match(info, /^loading:0\r?$/m);
  assert.match(info, /^redis_version:/m);
});

test('session open, keepalive, info', { timeout: TEST_TIMEOUT_MS }, async () => {
  const sid = await openSession(admin, 'node-session');
  const left = Number(await admin.call('SESSION.KEEPALIVE', sid));
  assert.ok(left > 0 && left <= 30000, `SESSION.KEEPALIVE answered ${left} ms`);
  const info = flat(await admin.call('SESSION.INFO', sid));
  assert.equal(info.session, sid);
  assert.equal(info.service, 'node-session');
  assert.equal(info.replica, 'r1');
  assert.equal(info.pid, String(process.pid));
  assert.equal(info.admin, 'http://127.0.0.1:9/debug');
  assert.equal(info.ttl_ms, '30000');
  assert.equal(info.held_count, '0');
  assert.equal(info.waiting_count, '0');
  assert.equal(await admin.call('SESSION.CLOSE', sid), 'OK');
  await assert.rejects(admin.call('SESSION.INFO', sid), /^ReplyError: NOSESSION/);
});

test('FIFO hand-off between two ioredis clients blocked in LOCK.ACQUIRE', { timeout: TEST_TIMEOUT_MS }, async () => {
  const holder = await openSession(admin, 'node-holder');
  const c1 = await client('node-w1');
  const c2 = await client('node-w2');
  const s1 = await openSession(c1, 'node-w1');
  const s2 = await openSession(c2, 'node-w2');
  const t0 = BigInt(await admin.call('LOCK.ACQUIRE', holder, 'fifo', 'DESC', 'node holder'));

  const order = [];
  const w1 = track(c1.call('LOCK.ACQUIRE', s1, 'fifo', 'DESC', 'first').then((t) => { order.push('w1'); return t; }));
  await until('first waiter queued', async () => (await waiterCount(admin, 'fifo')) === 1);
  const w2 = track(c2.call('LOCK.ACQUIRE', s2, 'fifo', 'DESC', 'second').then((t) => { order.push('w2'); return t; }));
  await until('second waiter queued', async () => (await waiterCount(admin, 'fifo')) === 2);

  const info = await lockInfo(admin, 'fifo');
  assert.equal(info.holder_session, holder);
  const waiters = info.waiters.map(flat);
  assert.deepEqual(waiters.map((w) => w.session), [s1, s2], 'waiters listed in FIFO order');
  assert.deepEqual(waiters.map((w) => w.description), ['first', 'second']);
  assert.equal(w1.settled || w2.settled, false, 'nobody granted while the holder holds');

  assert.equal(await admin.call('LOCK.RELEASE', holder, 'fifo', String(t0)), 'OK');
  const t1 = BigInt(await w1.promise);
  assert.ok(t1 > t0, `hand-off token ${t1} > ${t0}`);
  const after1 = await lockInfo(admin, 'fifo');
  assert.equal(after1.holder_session, s1);
  assert.equal(after1.waiter_count, '1');
  assert.equal(w2.settled, false, 'second waiter still blocked after the first hand-off');

  assert.equal(await c1.call('LOCK.RELEASE', s1, 'fifo', String(t1)), 'OK');
  const t2 = BigInt(await w2.promise);
  assert.ok(t2 > t1, `second hand-off token ${t2} > ${t1}`);
  assert.deepEqual(order, ['w1', 'w2']);
  assert.equal(await c2.call('LOCK.RELEASE', s2, 'fifo', String(t2)), 'OK');
  assert.equal(await lockInfo(admin, 'fifo'), null);
});

test('WAIT timeout and NOWAIT on a held lock answer null', { timeout: TEST_TIMEOUT_MS }, async () => {
  const holder = await openSession(admin, 'node-holder');
  const other = await openSession(admin, 'node-other');
  const t = await admin.call('LOCK.ACQUIRE', holder, 'busy');
  assert.equal(await admin.call('LOCK.ACQUIRE', other, 'busy', 'WAIT', 100), null);
  assert.equal(await admin.call('LOCK.ACQUIRE', other, 'busy', 'NOWAIT'), null);
  assert.equal(await waiterCount(admin, 'busy'), 0, 'a timed-out wait leaves no waiter');
  assert.equal((await lockInfo(admin, 'busy')).holder_session, holder);
  assert.equal(await admin.call('LOCK.RELEASE', holder, 'busy', t), 'OK');
});

test('LOCK.CANCEL answers the blocked client with CANCELLED', { timeout: TEST_TIMEOUT_MS }, async () => {
  const holder = await openSession(admin, 'node-holder');
  const bc = await client('node-cancelled');
  const s = await openSession(bc, 'node-cancelled');
  const t = await admin.call('LOCK.ACQUIRE', holder, 'cancel');
  const w = track(bc.call('LOCK.ACQUIRE', s, 'cancel'));
  await until('waiter queued', async () => (await waiterCount(admin, 'cancel')) === 1);
  assert.equal(await admin.call('LOCK.CANCEL', s, 'cancel'), '1');
  await assert.rejects(w.promise, (e) => {
    assert.ok(e.message.startsWith('CANCELLED'), `blocked client got: ${e.message}`);
    return true;
  });
  assert.equal(await waiterCount(admin, 'cancel'), 0);
  assert.equal(await bc.ping(), 'PONG', 'the cancelled client\'s connection keeps working');
  assert.equal(await admin.call('LOCK.CANCEL', s, 'cancel'), '0', 'nothing left to cancel');
  assert.equal(await admin.call('LOCK.RELEASE', holder, 'cancel', t), 'OK');
});

test('disconnect() of a blocked client withdraws its wait', { timeout: TEST_TIMEOUT_MS }, async () => {
  const holder = await openSession(admin, 'node-holder');
  const bc = await client('node-closing');
  const s = await openSession(admin, 'node-closing');
  const t = await admin.call('LOCK.ACQUIRE', holder, 'closing');
  const w = track(bc.call('LOCK.ACQUIRE', s, 'closing'));
  await until('waiter queued', async () => (await waiterCount(admin, 'closing')) === 1);
  bc.disconnect();
  await assert.rejects(w.promise, /Connection is closed/);
  await until('wait withdrawn after disconnect', async () => (await waiterCount(admin, 'closing')) === 0);
  assert.equal(flat(await admin.call('SESSION.INFO', s)).waiting_count, '0');
  assert.equal(await admin.call('LOCK.RELEASE', holder, 'closing', t), 'OK');
  assert.equal(await lockInfo(admin, 'closing'), null, 'the withdrawn waiter was not granted the lock');
});

test('fencing tokens strictly increase across 100 acquire/release cycles', { timeout: TEST_TIMEOUT_MS }, async () => {
  const a = await openSession(admin, 'node-cycles-a');
  const b = await openSession(admin, 'node-cycles-b');
  let prev = 0n;
  for (let i = 0; i < 100; i++) {
    const s = i % 2 ? a : b; // alternate sessions: the lock changes hands every cycle
    const t = BigInt(await admin.call('LOCK.ACQUIRE', s, 'cycle', 'NOWAIT'));
    assert.ok(t > prev, `cycle ${i}: token ${t} after ${prev}`);
    assert.equal(await admin.call('LOCK.RELEASE', s, 'cycle', String(t)), 'OK');
    prev = t;
  }
});

test('pipelining: several commands in one ioredis pipeline()', { timeout: TEST_TIMEOUT_MS }, async () => {
  const a = await openSession(admin, 'node-pipe-a');
  const b = await openSession(admin, 'node-pipe-b');
  const res = await admin.pipeline()
    .ping()
    .call('LOCK.ACQUIRE', a, 'pipe', 'NOWAIT', 'DESC', 'pipelined')
    .call('LOCK.ACQUIRE', b, 'pipe', 'NOWAIT')
    .call('LOCK.INFO', 'pipe')
    .call('NOSUCHCMD')
    .call('SESSION.KEEPALIVE', a)
    .exec();
  assert.equal(res.length, 6);
  const [[e0, pong], [e1, tok], [e2, busy], [e3, info], [e4], [e5, left]] = res;
  assert.equal(e0, null); assert.equal(pong, 'PONG');
  assert.equal(e1, null); assert.match(tok, /^[0-9]+$/);
  assert.equal(e2, null); assert.equal(busy, null);
  assert.equal(e3, null);
  const li = flat(info);
  assert.equal(li.holder_session, a);
  assert.equal(li.token, tok);
  assert.equal(li.description, 'pipelined');
  assert.ok(e4 instanceof Error && /^ERR unknown command 'NOSUCHCMD'/.test(e4.message), `got ${e4}`);
  assert.equal(e5, null); assert.ok(Number(left) > 0);
  const res2 = await admin.pipeline()
    .call('LOCK.RELEASE', a, 'pipe', tok)
    .call('LOCK.ACQUIRE', b, 'pipe', 'NOWAIT')
    .exec();
  assert.equal(res2[0][1], 'OK');
  assert.ok(BigInt(res2[1][1]) > BigInt(tok), 'the next grant in the same pipeline has a larger token');
  assert.equal(await admin.call('LOCK.RELEASE', b, 'pipe', res2[1][1]), 'OK');
});

test('bad TTL and other bad input answer specific errors; the server stays up', { timeout: TEST_TIMEOUT_MS }, async () => {
  await assert.rejects(admin.call('SESSION.OPEN', -1, 'SERVICE', 'x'), /^ReplyError: BADTTL/);
  await assert.rejects(admin.call('SESSION.OPEN', 0, 'SERVICE', 'x'), /^ReplyError: BADTTL/);
  await assert.rejects(admin.call('SESSION.OPEN', 99999999999, 'SERVICE', 'x'), /^ReplyError: BADTTL/);
  await assert.rejects(admin.call('SESSION.OPEN', 'soon', 'SERVICE', 'x'), /^ReplyError: ERR wrong arguments/);
  await assert.rejects(admin.call('LOCK.RELEASE', '1', 'x'), /^ReplyError: ERR wrong arguments: usage: LOCK.RELEASE/);
  await assert.rejects(admin.call('LOCK.ACQUIRE', '1', 'x', 'WAIT', -5), /^ReplyError: ERR WAIT -5 ms is out of range/);
  const s = await openSession(admin, 'node-bad');
  const t = await admin.call('LOCK.ACQUIRE', s, 'stale');
  assert.equal(await admin.call('LOCK.RELEASE', s, 'stale', t), 'OK');
  const t2 = await admin.call('LOCK.ACQUIRE', s, 'stale');
  await assert.rejects(admin.call('LOCK.RELEASE', s, 'stale', t), /^ReplyError: STALE/);
  assert.equal(await admin.call('LOCK.RELEASE', s, 'stale', t2), 'OK');
  assert.equal(await admin.ping(), 'PONG');
});
