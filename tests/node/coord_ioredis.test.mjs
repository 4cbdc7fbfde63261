// ravel coord driven by a real Node Redis client: ioredis (pinned in package.json).
// Run by tests/scripts/check_coord_ioredis.sh, which starts coord and passes its port:
//   node coord_ioredis.test.mjs PORT [--state FILE]
//   node coord_ioredis.test.mjs PORT --after-restart FILE
// The first runs every test and, with --state, leaves what the config store
// held in FILE (JSON); the script then restarts coord on the same data
// directory and runs the second, which runs only the after-restart tests.
// Uses node's built-in test runner (node:test); exits non-zero if any test fails.
//
// Integers are read with stringNumbers (fencing tokens may exceed 2^53) and compared as BigInt.
// Every wait polls observed state (LOCK.INFO, CFG.TARGETS) with a bound; nothing rests on a sleep.
import { test as nodeTest, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import Redis from 'ioredis';

const port = Number(process.argv[2] ?? process.env.COORD_PORT);
const argOf = (flag) => {
  const i = process.argv.indexOf(flag, 3);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const stateFile = argOf('--state');
const afterRestartFile = argOf('--after-restart');
if (!Number.isInteger(port) || port <= 0 || (process.argv.length > 3 && !stateFile && !afterRestartFile)) {
  console.error('usage: node coord_ioredis.test.mjs PORT [--state FILE | --after-restart FILE]');
  process.exit(2);
}

// test() declares a test of the first run; afterRestart() one of the run after a restart.
const test = (name, opts, fn) => { if (!afterRestartFile) nodeTest(name, opts, fn); };
const afterRestart = (name, opts, fn) => { if (afterRestartFile) nodeTest(name, opts, fn); };

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

// ---- config (CFG.*) ---------------------------------------------------------------------------
// Layers platform / svc/billing / svc/billing/1; billing overrides log.level and inherits db.pool.

const cfg = {}; // revisions and session ids shared by the config tests, which run in order

const revision = async (r) => Number(await r.call('CFG.REVISION'));
async function cfgSet(r, ...args) {
  const v = await r.call('CFG.SET', ...args);
  assert.match(v, /^[1-9][0-9]*$/, `CFG.SET ${args.join(' ')} answered ${v}`);
  return Number(v);
}
async function targets(r, service) {
  const a = service === undefined ? await r.call('CFG.TARGETS') : await r.call('CFG.TARGETS', service);
  return a.map(flat);
}
// All watches on a service: its own row's and its replicas'.
const watchesOf = async (r, service) =>
  (await targets(r, service)).reduce((n, t) => n + Number(t.watches), 0);
// [resume_rev, [event...]] as { resume, events } with events as objects.
function watchReply(a) {
  assert.ok(Array.isArray(a) && a.length === 2 && Array.isArray(a[1]), `watch reply ${JSON.stringify(a)}`);
  return { resume: Number(a[0]), events: a[1].map(flat) };
}
async function watchNow(r, ...args) {
  return watchReply(await r.call(args[0], ...args.slice(1), 'TIMEOUT', 0));
}
async function dryRun(r, ...args) {
  const d = flat(await r.call('CFG.DRYRUN', ...args));
  d.impacts = d.impacts.map(flat);
  return d;
}
const impactOf = (d, service, replica) =>
  d.impacts.find((i) => i.service === service && i.replica === replica);
const revs = (list) => list.map((e) => Number(e.revision));
const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));
const EVENT = ['revision', 'key', 'ns', 'op', 'old', 'old_layer', 'new', 'new_layer', 'author', 'reason'];
const IMPACT = ['effect', 'overridden_by', 'old', 'old_layer', 'new', 'new_layer'];

test('config: sessions register billing/1 and search; layered effective values', { timeout: TEST_TIMEOUT_MS }, async () => {
  cfg.billingSid = await admin.call('SESSION.OPEN', 60000, 'SERVICE', 'billing', 'REPLICA', '1', 'PID', process.pid);
  cfg.searchSid = await admin.call('SESSION.OPEN', 60000, 'SERVICE', 'search', 'PID', process.pid);
  const t = await targets(admin);
  const b1 = t.find((x) => x.service === 'billing' && x.replica === '1');
  assert.ok(b1, `CFG.TARGETS lacks billing/1: ${JSON.stringify(t)}`);
  assert.deepEqual(pick(b1, ['ns', 'registered', 'keys', 'watches']),
    { ns: 'svc/billing/1', registered: '1', keys: '0', watches: '0' });
  assert.ok(t.find((x) => x.service === 'billing' && x.replica === ''), 'CFG.TARGETS lacks the service billing');
  const se = t.find((x) => x.service === 'search' && x.replica === '');
  assert.ok(se, 'CFG.TARGETS lacks search');
  assert.equal(se.registered, '1');
  cfg.ntargets = t.length;

  cfg.rPool = await cfgSet(admin, 'platform', 'db.pool', '10', 'AUTHOR', 'ops-alice', 'REASON', 'initial pool');
  cfg.rLog = await cfgSet(admin, 'platform', 'log.level', 'info', 'AUTHOR', 'ops-alice', 'REASON', 'initial level');
  cfg.rBlog = await cfgSet(admin, 'svc/billing', 'log.level', 'debug', 'AUTHOR', 'billing-bob', 'REASON', 'debug billing');
  assert.ok(cfg.rPool < cfg.rLog && cfg.rLog < cfg.rBlog, 'revisions increase');
  assert.equal(await revision(admin), cfg.rBlog);
  assert.deepEqual(pick(flat(await admin.call('CFG.EFFECTIVE', 'billing/1', 'log.level')), ['value', 'layer', 'ns', 'mod_revision']),
    { value: 'debug', layer: 'service', ns: 'svc/billing', mod_revision: String(cfg.rBlog) });
  assert.deepEqual(pick(flat(await admin.call('CFG.EFFECTIVE', 'search', 'log.level')), ['value', 'layer', 'ns']),
    { value: 'info', layer: 'platform', ns: 'platform' });
  assert.deepEqual(pick(flat(await admin.call('CFG.EFFECTIVE', 'billing', 'db.pool')), ['value', 'layer', 'mod_revision']),
    { value: '10', layer: 'platform', mod_revision: String(cfg.rPool) });
  const dump = (await admin.call('CFG.DUMP', 'billing/1')).map(flat);
  assert.deepEqual(dump.map((kv) => [kv.key, kv.value, kv.layer]),
    [['db.pool', '10', 'platform'], ['log.level', 'debug', 'service']]);
});

test('config: CFG.DRYRUN names inheriting targets old -> new; with ALL the overridden ones', { timeout: TEST_TIMEOUT_MS }, async () => {
  let d = await dryRun(admin, 'platform', 'db.pool', '20');
  assert.equal(d.impacts.length, cfg.ntargets, 'every target inherits db.pool from platform');
  assert.equal(d.changes, String(d.impacts.length));
  assert.equal(d.unaffected, '0');
  assert.equal(d.revision_now, String(cfg.rBlog));
  for (const [s, r] of [['billing', ''], ['billing', '1'], ['search', '']]) {
    const i = impactOf(d, s, r);
    assert.ok(i, `CFG.DRYRUN platform db.pool 20 does not name ${s}/${r}`);
    assert.deepEqual(pick(i, IMPACT), { effect: 'changes', overridden_by: '', old: '10', old_layer: 'platform', new: '20', new_layer: 'platform' });
  }
  assert.deepEqual([...new Set(d.impacts.map((i) => i.effect))], ['changes']);

  d = await dryRun(admin, 'platform', 'log.level', 'warn');
  assert.equal(d.impacts.find((i) => i.service === 'billing'), undefined, 'billing overrides log.level: not listed without ALL');
  assert.deepEqual(pick(impactOf(d, 'search', ''), IMPACT),
    { effect: 'changes', overridden_by: '', old: 'info', old_layer: 'platform', new: 'warn', new_layer: 'platform' });
  assert.equal(d.changes, String(d.impacts.length));
  assert.equal(d.unaffected, '2', 'billing and billing/1 are unaffected');
  assert.equal(d.impacts.length + 2, cfg.ntargets);

  d = await dryRun(admin, 'platform', 'log.level', 'warn', 'ALL');
  assert.equal(d.impacts.length, cfg.ntargets);
  for (const r of ['', '1']) {
    const i = impactOf(d, 'billing', r);
    assert.ok(i, `CFG.DRYRUN ... ALL does not name billing/${r}`);
    assert.deepEqual(pick(i, IMPACT), { effect: 'overridden', overridden_by: 'service', old: 'debug', old_layer: 'service', new: 'debug', new_layer: 'service' });
  }
  assert.equal(impactOf(d, 'search', '').effect, 'changes');

  // Deleting billing's override would hand billing (and its replica) back the platform value.
  d = await dryRun(admin, 'svc/billing', 'log.level', 'DELETE');
  assert.deepEqual(d.impacts.map((i) => `${i.service}/${i.replica}`).sort(), ['billing/', 'billing/1']);
  for (const i of d.impacts)
    assert.deepEqual(pick(i, IMPACT), { effect: 'changes', overridden_by: '', old: 'debug', old_layer: 'service', new: 'info', new_layer: 'platform' });

  await assert.rejects(admin.call('CFG.DRYRUN', 'platform', 'db.pool', '20', 'IFREV', String(cfg.rLog)), /^ReplyError: CONFLICT/);
  assert.equal(await revision(admin), cfg.rBlog, 'dry runs write nothing');
  assert.equal(flat(await admin.call('CFG.GET', 'platform', 'db.pool')).value, '10');
  assert.equal(flat(await admin.call('CFG.GET', 'svc/billing', 'log.level')).value, 'debug');
});

test('config: a blocked CFG.WATCH on a second client is answered only by an effective change', { timeout: TEST_TIMEOUT_MS }, async () => {
  const wc = await client('node-watcher');
  cfg.rev0 = await revision(admin);
  const w = track(wc.call('CFG.WATCH', 'billing', 'SINCE', cfg.rev0, 'TIMEOUT', 20000));
  await until('the blocked CFG.WATCH to show in CFG.TARGETS billing', async () => (await watchesOf(admin, 'billing')) >= 1);

  cfg.rA = await cfgSet(admin, 'platform', 'log.level', 'warn', 'AUTHOR', 'ops-carol', 'REASON', '(a) quieter platform');
  assert.ok((await watchesOf(admin, 'billing')) >= 1, '(a), overridden by billing, must not answer the watch');
  cfg.rB = await cfgSet(admin, 'svc/billing', 'log.level', 'debug', 'AUTHOR', 'billing-bob', 'REASON', '(b) same value');
  assert.ok((await watchesOf(admin, 'billing')) >= 1, '(b), the value billing has, must not answer the watch');
  assert.equal(w.settled, false, 'the watch is still blocked after (a) and (b)');

  cfg.rC = await cfgSet(admin, 'platform', 'db.pool', '20', 'AUTHOR', 'ops-carol', 'REASON', '(c) bigger pool');
  await until('the watch to answer after (c)', async () => w.settled);
  const { resume, events } = watchReply(await w.promise);
  assert.equal(resume, cfg.rC, 'resume_rev is (c)\'s revision');
  assert.equal(events.length, 1, `exactly one event: ${JSON.stringify(events)}`);
  assert.deepEqual(pick(events[0], EVENT), {
    revision: String(cfg.rC), key: 'db.pool', ns: 'platform', op: 'set', old: '10', old_layer: 'platform',
    new: '20', new_layer: 'platform', author: 'ops-carol', reason: '(c) bigger pool',
  });
  assert.ok(Math.abs(Number(events[0].time_ms) - Date.now()) < 60000, `time_ms ${events[0].time_ms} is now`);
  assert.equal(await watchesOf(admin, 'billing'), 0, 'the answered watch is gone');
  assert.equal(await wc.ping(), 'PONG', 'the watcher\'s connection keeps working');
  wc.disconnect();
});

test('config: watches resume from a revision without missing or repeating a change', { timeout: TEST_TIMEOUT_MS }, async () => {
  cfg.rD = await cfgSet(admin, 'platform', 'db.pool', '30', 'REASON', '(d)'); // no AUTHOR: the client name
  cfg.rE = await cfgSet(admin, 'platform', 'log.level', 'error', 'AUTHOR', 'ops-carol', 'REASON', '(e)');
  cfg.rF = await cfgSet(admin, 'svc/billing', 'feature.beta', 'on', 'AUTHOR', 'billing-bob', 'REASON', '(f)');
  cfg.rG = await cfgSet(admin, 'svc/search', 'db.pool', '5', 'AUTHOR', 'search-sue', 'REASON', '(g)');
  cfg.rH = await cfgSet(admin, 'svc/billing/1', 'db.pool', '7', 'AUTHOR', 'billing-bob', 'REASON', '(h)');

  const rc = await client('node-reconnected'); // the watcher, reconnected
  let w = await watchNow(rc, 'CFG.WATCH', 'billing', 'SINCE', cfg.rC);
  assert.deepEqual(revs(w.events), [cfg.rD, cfg.rF], 'billing missed (d) and (f), not (e), (g), (h)');
  assert.deepEqual(pick(w.events[0], ['key', 'old', 'new', 'author']), { key: 'db.pool', old: '20', new: '30', author: 'node-admin' });
  assert.deepEqual(pick(w.events[1], ['key', 'ns', 'old', 'old_layer', 'new', 'new_layer']),
    { key: 'feature.beta', ns: 'svc/billing', old: null, old_layer: 'none', new: 'on', new_layer: 'service' });
  assert.ok(w.resume >= cfg.rF && w.resume <= cfg.rH, `resume_rev ${w.resume} within [${cfg.rF}, ${cfg.rH}]`);
  assert.deepEqual((await watchNow(rc, 'CFG.WATCH', 'billing', 'SINCE', w.resume)).events, [], 'nothing repeated');
  assert.deepEqual(revs((await watchNow(rc, 'CFG.WATCH', 'billing', 'SINCE', cfg.rev0)).events), [cfg.rC, cfg.rD, cfg.rF]);
  w = await watchNow(rc, 'CFG.WATCH', 'billing/1', 'SINCE', cfg.rC);
  assert.deepEqual(revs(w.events), [cfg.rD, cfg.rF, cfg.rH], 'billing/1 also sees its replica layer');
  assert.deepEqual(pick(w.events[2], ['ns', 'old', 'old_layer', 'new', 'new_layer']),
    { ns: 'svc/billing/1', old: '30', old_layer: 'platform', new: '7', new_layer: 'replica' });

  // Resume a blocking watch: it waits for the next change after resume_rev, then gets only that.
  const wr = track(rc.call('CFG.WATCH', 'billing', 'SINCE', cfg.rH, 'TIMEOUT', 20000));
  await until('the resumed watch to block', async () => (await watchesOf(admin, 'billing')) >= 1);
  cfg.rJ = await cfgSet(admin, 'svc/billing', 'feature.beta', 'off', 'AUTHOR', 'billing-bob', 'REASON', '(j)');
  await until('the resumed watch to answer', async () => wr.settled);
  w = watchReply(await wr.promise);
  assert.deepEqual(revs(w.events), [cfg.rJ]);
  assert.equal(w.resume, cfg.rJ);
  assert.deepEqual(pick(w.events[0], ['old', 'new']), { old: 'on', new: 'off' });
});

test('config: CFG.WATCHRAW reports every write, overridden and same-value ones included', { timeout: TEST_TIMEOUT_MS }, async () => {
  let w = await watchNow(admin, 'CFG.WATCHRAW', 'platform', 'SINCE', cfg.rev0);
  assert.deepEqual(revs(w.events), [cfg.rA, cfg.rC, cfg.rD, cfg.rE]);
  assert.deepEqual(pick(w.events[0], ['key', 'ns', 'old', 'new', 'author']),
    { key: 'log.level', ns: 'platform', old: 'info', new: 'warn', author: 'ops-carol' });
  w = await watchNow(admin, 'CFG.WATCHRAW', 'platform', 'svc/billing', 'SINCE', cfg.rev0);
  assert.deepEqual(revs(w.events), [cfg.rA, cfg.rB, cfg.rC, cfg.rD, cfg.rE, cfg.rF, cfg.rJ]);
  assert.deepEqual(pick(w.events[1], ['key', 'ns', 'old', 'new']), { key: 'log.level', ns: 'svc/billing', old: 'debug', new: 'debug' });
});

test('config: IFREV conflicts, audit by key, rollback as a new revision', { timeout: TEST_TIMEOUT_MS }, async () => {
  const before = await revision(admin);
  await assert.rejects(admin.call('CFG.SET', 'platform', 'db.pool', '40', 'IFREV', cfg.rPool), (e) => {
    assert.match(e.message, /^CONFLICT /);
    assert.match(e.message, new RegExp(`mod_revision ${cfg.rD}\\b`), e.message);
    return true;
  });
  await assert.rejects(admin.call('CFG.SET', 'platform', 'db.pool', '40', 'IFREV', 0), /^ReplyError: CONFLICT/);
  await assert.rejects(admin.call('CFG.DEL', 'platform', 'db.pool', 'IFREV', cfg.rC), /^ReplyError: CONFLICT/);
  assert.equal(await revision(admin), before, 'conflicting writes write nothing');
  assert.equal(flat(await admin.call('CFG.GET', 'platform', 'db.pool')).value, '30');
  cfg.rN = await cfgSet(admin, 'platform', 'pool.mode', 'strict', 'IFREV', 0, 'AUTHOR', 'ops-dave', 'REASON', 'create');
  cfg.rI = await cfgSet(admin, 'platform', 'db.pool', '40', 'IFREV', cfg.rD, 'AUTHOR', 'ops-dave', 'REASON', 'cas to 40');

  let audit = (await admin.call('CFG.AUDIT', 'KEY', 'db.pool')).map(flat);
  assert.deepEqual(audit.map((a) => [Number(a.revision), a.ns, a.old, a.new, a.author, a.reason]), [
    [cfg.rPool, 'platform', null, '10', 'ops-alice', 'initial pool'],
    [cfg.rC, 'platform', '10', '20', 'ops-carol', '(c) bigger pool'],
    [cfg.rD, 'platform', '20', '30', 'node-admin', '(d)'],
    [cfg.rG, 'svc/search', null, '5', 'search-sue', '(g)'],
    [cfg.rH, 'svc/billing/1', null, '7', 'billing-bob', '(h)'],
    [cfg.rI, 'platform', '30', '40', 'ops-dave', 'cas to 40'],
  ]);
  assert.deepEqual(audit.map((a) => a.op), ['set', 'set', 'set', 'set', 'set', 'set']);
  assert.deepEqual(audit.map((a) => a.layer), ['platform', 'platform', 'platform', 'service', 'replica', 'platform']);
  const times = audit.map((a) => Number(a.time_ms));
  assert.deepEqual(times, [...times].sort((x, y) => x - y), 'audit times do not go backwards');
  assert.ok(Math.abs(times[times.length - 1] - Date.now()) < 60000, 'audit times are wall-clock ms');
  audit = (await admin.call('CFG.AUDIT', 'KEY', 'db.pool', 'NEWEST', 'LIMIT', 2)).map(flat);
  assert.deepEqual(revs(audit), [cfg.rI, cfg.rH]);
  audit = (await admin.call('CFG.AUDIT', 'NS', 'platform', 'KEY', 'db.pool', 'SINCE', cfg.rC, 'UNTIL', cfg.rD)).map(flat);
  assert.deepEqual(revs(audit), [cfg.rC, cfg.rD]);
  audit = (await admin.call('CFG.AUDIT', 'KEY', 'db.pool', 'FROM', times[times.length - 1])).map(flat);
  assert.ok(revs(audit).includes(cfg.rI), 'FROM the last write\'s time includes it');

  cfg.rR = Number(await admin.call('CFG.ROLLBACK', 'platform', 'db.pool', cfg.rC, 'AUTHOR', 'ops-erin', 'REASON', 'back to 20'));
  assert.ok(cfg.rR > cfg.rI, `rollback revision ${cfg.rR} is a new revision`);
  assert.deepEqual(pick(flat(await admin.call('CFG.GET', 'platform', 'db.pool')), ['value', 'mod_revision', 'create_revision']),
    { value: '20', mod_revision: String(cfg.rR), create_revision: String(cfg.rPool) });
  const [last] = (await admin.call('CFG.AUDIT', 'KEY', 'db.pool', 'NEWEST', 'LIMIT', 1)).map(flat);
  assert.deepEqual(pick(last, ['revision', 'op', 'ns', 'old', 'new', 'rollback_to', 'author', 'reason']), {
    revision: String(cfg.rR), op: 'rollback', ns: 'platform', old: '40', new: '20',
    rollback_to: String(cfg.rC), author: 'ops-erin', reason: 'back to 20',
  });
  const w = await watchNow(admin, 'CFG.WATCH', 'billing', 'SINCE', cfg.rI);
  assert.deepEqual(revs(w.events), [cfg.rR], 'billing is notified of the rollback');
  assert.deepEqual(pick(w.events[0], ['op', 'old', 'new']), { op: 'rollback', old: '40', new: '20' });
  cfg.rR2 = Number(await admin.call('CFG.ROLLBACK', 'platform', 'pool.mode', cfg.rN - 1, 'AUTHOR', 'ops-erin', 'REASON', 'undo'));
  assert.equal(await admin.call('CFG.GET', 'platform', 'pool.mode'), null, 'rolled back to before it existed: deleted');
  const pm = (await admin.call('CFG.AUDIT', 'KEY', 'pool.mode')).map(flat);
  assert.deepEqual(pm.map((a) => [Number(a.revision), a.op, a.old, a.new]),
    [[cfg.rN, 'set', null, 'strict'], [cfg.rR2, 'rollback', 'strict', null]]);
});

// What a restart must keep: values, revision, history, registered targets.
async function cfgSnapshot(r) {
  const lists = {};
  for (const ns of ['platform', 'svc/billing', 'svc/billing/1', 'svc/search'])
    lists[ns] = await r.call('CFG.LIST', ns);
  return {
    revision: await revision(r),
    lists,
    dumpBilling1: await r.call('CFG.DUMP', 'billing/1'),
    dumpSearch: await r.call('CFG.DUMP', 'search'),
    targets: await r.call('CFG.TARGETS'),
    audit: await r.call('CFG.AUDIT', 'LIMIT', 1000),
    watchBilling: await r.call('CFG.WATCH', 'billing', 'SINCE', cfg.rev0, 'TIMEOUT', 0),
  };
}

test('config: snapshot for the restart check', { timeout: TEST_TIMEOUT_MS }, async () => {
  assert.equal(await admin.call('SESSION.CLOSE', cfg.billingSid), 'OK');
  assert.equal(await admin.call('SESSION.CLOSE', cfg.searchSid), 'OK');
  const snap = await cfgSnapshot(admin);
  assert.equal(snap.revision, cfg.rR2);
  const boot = Number((await admin.info()).match(/^boot:([0-9]+)\r?$/m)?.[1]);
  assert.ok(boot >= 1, 'INFO shows the boot count');
  if (stateFile) fs.writeFileSync(stateFile, JSON.stringify({ cfg, snap, boot }));
});

// ---- after coord was restarted on the same data directory (--after-restart STATE) ---------------

let restarted; // { cfg, snap } from the run before the restart

afterRestart('config after a restart: revision, values, history and targets as before', { timeout: TEST_TIMEOUT_MS }, async () => {
  restarted = JSON.parse(fs.readFileSync(afterRestartFile, 'utf8'));
  Object.assign(cfg, restarted.cfg);
  admin = await client('node-admin');
  // A later boot (not necessarily the next: a start that found its port taken counts one too).
  const boot = Number((await admin.info()).match(/^boot:([0-9]+)\r?$/m)?.[1]);
  assert.ok(boot > restarted.boot, `coord was restarted: boot ${boot} after ${restarted.boot}`);
  assert.equal(await revision(admin), restarted.snap.revision);
  assert.deepEqual(await cfgSnapshot(admin), restarted.snap);
  assert.equal(flat(await admin.call('CFG.EFFECTIVE', 'billing/1', 'log.level')).value, 'debug');
  const d = await dryRun(admin, 'platform', 'db.pool', '21', 'ALL');
  assert.deepEqual(pick(impactOf(d, 'billing', ''), ['effect', 'old', 'new']), { effect: 'changes', old: '20', new: '21' });
  assert.deepEqual(pick(impactOf(d, 'billing', '1'), ['effect', 'overridden_by', 'old']), { effect: 'overridden', overridden_by: 'replica', old: '7' });
  assert.deepEqual(pick(impactOf(d, 'search', ''), ['effect', 'overridden_by', 'old']), { effect: 'overridden', overridden_by: 'service', old: '5' });
});

afterRestart('config after a restart: a watch resumes, new writes continue the revisions', { timeout: TEST_TIMEOUT_MS }, async () => {
  const w0 = await watchNow(admin, 'CFG.WATCH', 'billing', 'SINCE', cfg.rC);
  assert.deepEqual(revs(w0.events), [cfg.rD, cfg.rF, cfg.rJ, cfg.rN, cfg.rI, cfg.rR, cfg.rR2],
    'resuming from before the restart: every change billing saw since (c), (e) (g) (h) not');
  const wc = await client('node-watcher-after-restart');
  const w = track(wc.call('CFG.WATCH', 'billing', 'SINCE', restarted.snap.revision, 'TIMEOUT', 20000));
  await until('the watch to block', async () => (await watchesOf(admin, 'billing')) >= 1);
  const r = await cfgSet(admin, 'platform', 'db.pool', '25', 'AUTHOR', 'ops-frank', 'REASON', 'after restart');
  assert.equal(r, restarted.snap.revision + 1, 'the first write after the restart gets the next revision');
  await until('the watch to answer', async () => w.settled);
  const { resume, events } = watchReply(await w.promise);
  assert.equal(resume, r);
  assert.deepEqual(events.map((e) => pick(e, ['revision', 'old', 'new'])), [{ revision: String(r), old: '20', new: '25' }]);
});
