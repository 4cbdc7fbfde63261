#!/usr/bin/env python3
"""kill -9 durability test for `ravel queue` (run by check_queue_crash.sh).

  queue_crash.py --bin BUILD/ravel --data DIR --workdir DIR [--rounds 8] [--seed N] [--budget S]

One data directory, one topic, one channel; the server is killed with SIGKILL
once per round and restarted on the same data directory:

  start the server (--sync always)
  round r = 1..K:
    load:    one consumer (SUB, RDY 200, FIN each message as it comes) and two
             producers (MPUB batches of 50 unique bodies, 4 batches pipelined).
             A body counts as ACKNOWLEDGED once the OK of its MPUB came back.
             After N acknowledged messages (N random per round, 10k..60k;
             after 8 s if a loaded machine cannot get there), kill -9.
    restart: same data directory; a consumer drains the channel, FIN'ing
             everything, until every acknowledged body has been seen again or
             FIN'd before the kill and /stats shows depth 0, nothing in flight.
    check:   lost = acknowledged - FIN'd before the kill - delivered after the
             restart; must be empty.  Bodies FIN'd before the kill and delivered
             again are counted (docs/queue.md: FINs of the last 200 ms may be
             redelivered), split by how long before the kill their FIN was sent;
             so are bodies of earlier rounds that come back ("stale"), and
             redeliveries whose id differs from the one seen before the kill.
  the server of the last restart is stopped with SIGTERM and must exit 0.
No new round starts after --budget seconds (default 25; at least 2 rounds run),
so a loaded machine runs fewer rounds instead of hitting the CTest timeout.

The server's pid is written to WORKDIR/server.pid whenever one runs, so the
calling script can kill it if this driver dies.  Every wait has a deadline.
Exits 1 on a lost message, a body nobody published, or a server that does not
start; prints one summary line per round and the totals.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

TOPIC = "crash"
CHANNEL = "c"
BATCH = 50            # messages per MPUB
WINDOW = 4            # MPUBs in flight per producer
PRODUCERS = 2
FIN_WINDOW_S = 0.200  # docs/queue.md: FINs of the last 200 ms may be redelivered
FIN_SLACK_S = 0.100   # the FIN was *sent* at that time; the server saw it a bit later


def log(msg):
    print(msg, flush=True)


# ---- NSQ wire (reference nsq-protocol.md section 1) -----------------------------------

class Closed(Exception):
    pass


class NsqConn:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(b"  V2")

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed(str(e))

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise
            except OSError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk

    def frame(self):
        """(type, data) of the next frame; socket.timeout if none in time, Closed on EOF."""
        self._fill(4)
        size = struct.unpack(">i", self.buf[:4])[0]
        self._fill(4 + size)
        ftype = struct.unpack(">i", self.buf[4:8])[0]
        data = bytes(self.buf[8:4 + size])
        del self.buf[:4 + size]
        return ftype, data

    def identify(self, **fields):
        body = json.dumps(fields).encode()
        self.send(b"IDENTIFY\n" + struct.pack(">i", len(body)) + body)
        t, d = self.frame()
        if t != 0:
            raise RuntimeError(f"IDENTIFY failed: {d!r}")

    def subscribe(self, rdy):
        self.send(f"SUB {TOPIC} {CHANNEL}\n".encode())
        t, d = self.frame()
        if (t, d) != (0, b"OK"):
            raise RuntimeError(f"SUB failed: {t} {d!r}")
        self.send(f"RDY {rdy}\n".encode())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def mpub_cmd(bodies):
    parts = [struct.pack(">i", len(bodies))]
    for b in bodies:
        parts.append(struct.pack(">i", len(b)))
        parts.append(b)
    payload = b"".join(parts)
    return f"MPUB {TOPIC}\n".encode() + struct.pack(">i", len(payload)) + payload


def parse_msg(data):
    # [int64 ts][uint16 attempts][16-byte id][body]
    attempts = struct.unpack(">H", data[8:10])[0]
    return data[10:26], attempts, data[26:]


# ---- load phase ----------------------------------------------------------------------

class Load:
    def __init__(self, run, rnd):
        self.run, self.rnd = run, rnd
        self.lock = threading.Lock()
        self.acked = set()
        self.sent = set()         # every body written in an MPUB (acknowledged or not)
        self.fin_at = {}          # body -> monotonic time its FIN was written
        self.ids = {}             # body -> message id seen before the kill
        self.received = 0
        self.errors = []
        self.stop = threading.Event()

    def producer(self, port, p):
        seq = 0
        pending = []  # batches written, OK not yet read (replies come in order)
        try:
            c = NsqConn(port)
            c.identify(client_id=f"producer{p}", feature_negotiation=False)
            while not self.stop.is_set():
                while len(pending) < WINDOW:
                    bodies = []
                    for _ in range(BATCH):
                        # unique, ~100 bytes, recognisable
                        bodies.append(f"{self.run}-r{self.rnd}-p{p}-{seq:09d}-".encode().ljust(100, b"x"))
                        seq += 1
                    with self.lock:
                        self.sent.update(bodies)
                    c.send(mpub_cmd(bodies))
                    pending.append(bodies)
                t, d = c.frame()
                if t == 0 and d == b"_heartbeat_":
                    c.send(b"NOP\n")
                elif t == 0 and d == b"OK":
                    done = pending.pop(0)
                    with self.lock:
                        self.acked.update(done)
                else:
                    self.errors.append(f"producer{p}: unexpected frame {t} {d[:80]!r}")
                    return
        except (Closed, socket.timeout):
            return  # the server was killed
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"producer{p}: {e!r}")

    def consumer(self, port, subscribed):
        try:
            c = NsqConn(port)
            c.identify(client_id="consumer", feature_negotiation=False)
            c.subscribe(200)
            subscribed.set()
            while not self.stop.is_set():
                t, d = c.frame()
                if t == 2:
                    mid, _attempts, body = parse_msg(d)
                    with self.lock:
                        self.received += 1
                        self.ids.setdefault(body, mid)
                    c.send(b"FIN " + mid + b"\n")
                    with self.lock:
                        self.fin_at[body] = time.monotonic()
                elif t == 0 and d == b"_heartbeat_":
                    c.send(b"NOP\n")
                elif t == 1:
                    self.errors.append(f"consumer: error frame {d[:80]!r}")
                    return
        except (Closed, socket.timeout):
            return
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"consumer: {e!r}")
        finally:
            subscribed.set()

    def n_acked(self):
        with self.lock:
            return len(self.acked)


# ---- server process ------------------------------------------------------------------

class Server:
    def __init__(self, args):
        self.args = args
        self.proc = None
        self.tcp = self.http = None
        self.starts = 0
        self.pidfile = os.path.join(args.workdir, "server.pid")

    def start(self, rng):
        """Start on the same data dir; keeps the ports if it can, else picks new ones."""
        for attempt in range(20):
            if self.tcp is None or attempt > 0:
                self.tcp, self.http = rng.sample(range(20000, 60000), 2)
            self.starts += 1
            err = os.path.join(self.args.workdir, f"server.{self.starts}.err")
            out = os.path.join(self.args.workdir, f"server.{self.starts}.out")
            self.err_path = err
            self.proc = subprocess.Popen(
                [self.args.bin, "queue", "--host", "127.0.0.1", "--tcp-port", str(self.tcp),
                 "--http-port", str(self.http), "--data", self.args.data, "--sync", "always"],
                stdout=open(out, "w"), stderr=open(err, "w"))
            with open(self.pidfile, "w") as f:
                f.write(f"{self.proc.pid}\n")
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15:
                with open(out) as f:
                    if f.read().startswith("queue: NSQ TCP on"):
                        return time.monotonic() - t0
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            self.kill()
            with open(err) as f:
                text = f.read()
            if "in use" not in text:
                raise RuntimeError(f"ravel queue did not start:\n{text[-2000:]}")
        raise RuntimeError("ravel queue did not start: no free ports in 20 attempts")

    def kill(self, sig=signal.SIGKILL, wait=10):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.proc = None
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass
        return rc

    def stats(self):
        url = f"http://127.0.0.1:{self.http}/stats?format=json&topic={TOPIC}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)

    def channel_stats(self):
        for t in self.stats().get("topics") or []:
            if t.get("topic_name") == TOPIC:
                for c in t.get("channels") or []:
                    if c.get("channel_name") == CHANNEL:
                        return c
        return None

    def log_lines(self, words):
        with open(self.err_path) as f:
            return [ln.rstrip() for ln in f if any(w in ln for w in words)]


# ---- drain after a restart -----------------------------------------------------------

def drain(srv, expect, deadline_s=15.0):
    """FIN everything; returns (bodies -> [(id, attempts)], drained_ok).  Stops once /stats shows
    the channel empty with nothing in flight and every body of `expect` has arrived (or nothing
    has for a second: the rest are lost)."""
    got = {}
    c = NsqConn(srv.tcp, timeout=5)
    c.identify(client_id="drain", feature_negotiation=False)
    c.subscribe(2500)
    c.sock.settimeout(0.2)
    end = time.monotonic() + deadline_s
    next_stats = 0.0
    last_msg = time.monotonic()
    drained = False
    try:
        while time.monotonic() < end:
            try:
                t, d = c.frame()
            except socket.timeout:
                t = None
            if t == 2:
                mid, attempts, body = parse_msg(d)
                got.setdefault(body, []).append((mid, attempts))
                c.send(b"FIN " + mid + b"\n")
                last_msg = time.monotonic()
                continue
            if t == 0 and d == b"_heartbeat_":
                c.send(b"NOP\n")
            elif t == 1:
                raise RuntimeError(f"drain: error frame {d[:80]!r}")
            # Idle for 200 ms: is the channel drained?  Done once /stats shows it empty and either
            # every expected body came or nothing came for a second (the missing ones are lost).
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 0.1
                ch = srv.channel_stats()
                if ch and ch["depth"] == 0 and ch["in_flight_count"] == 0 and ch["deferred_count"] == 0 \
                        and (expect.issubset(got.keys()) or time.monotonic() - last_msg > 1.0):
                    drained = True
                    break
    finally:
        c.close()
    return got, drained


# ---- main ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--budget", type=float, default=25.0,
                    help="start no new round after this many seconds (a loaded machine runs fewer)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    run = f"{seed:x}"
    log(f"crash test: {args.rounds} rounds (no new round after {args.budget:.0f} s), seed {seed}, "
        f"data {args.data}")
    began = time.monotonic()

    srv = Server(args)
    failures = []
    tot = dict(kills=0, acked=0, sent=0, fins=0, lost=0, redelivered=0, outside=0, stale=0, dup=0, newid=0)
    try:
        srv.start(rng)
        for rnd in range(1, args.rounds + 1):
            if rnd > 2 and time.monotonic() - began > args.budget:
                log(f"time budget of {args.budget:.0f} s used up: stopping after {rnd - 1} rounds")
                break
            kill_after = rng.randrange(10000, 60000)
            load = Load(run, rnd)
            subscribed = threading.Event()
            threads = [threading.Thread(target=load.consumer, args=(srv.tcp, subscribed), daemon=True)]
            threads[0].start()
            subscribed.wait(10)
            for p in range(PRODUCERS):
                threads.append(threading.Thread(target=load.producer, args=(srv.tcp, p), daemon=True))
                threads[-1].start()
            t0 = time.monotonic()
            # Kill after kill_after acks; on a machine too loaded to get there in 8 s, kill anyway.
            while load.n_acked() < kill_after and time.monotonic() - t0 < 8 and not load.errors:
                time.sleep(0.002)
            if load.errors:
                failures.append(f"round {rnd}: {load.errors}")
            acked_at_kill = load.n_acked()
            kill_t = time.monotonic()
            srv.kill(signal.SIGKILL)
            tot["kills"] += 1
            load_s = kill_t - t0
            load.stop.set()
            for th in threads:
                th.join(10)  # their sockets see EOF/RST at once
            if any(th.is_alive() for th in threads):
                failures.append(f"round {rnd}: a client thread did not stop after the kill")
            if acked_at_kill == 0:
                failures.append(f"round {rnd}: no publish acknowledged in 8 s")
            elif acked_at_kill < kill_after:
                log(f"  NOTE: only {acked_at_kill} of {kill_after} acks in 8 s: killed anyway")

            start_s = srv.start(rng)
            torn = srv.log_lines(["level=warn", "level=error"])
            with load.lock:
                acked, sent, fin_at = set(load.acked), set(load.sent), dict(load.fin_at)
            expect = acked - fin_at.keys()
            d0 = time.monotonic()
            got, drained = drain(srv, expect)
            drain_s = time.monotonic() - d0
            after = set(got)

            lost = acked - fin_at.keys() - after
            stale = {b for b in after if b.startswith(f"{run}-r".encode()) and b not in sent
                     and int(b.split(b"-")[1][1:]) < rnd}
            unknown = {b for b in after if b not in sent and b not in stale}
            redelivered = after & fin_at.keys()
            outside = {b for b in redelivered if kill_t - fin_at[b] > FIN_WINDOW_S + FIN_SLACK_S}
            dup = {b for b, v in got.items() if len(v) > 1}
            newid = {b for b in after if b in load.ids and got[b][0][0] != load.ids[b]}
            log(f"round {rnd}: kill -9 after {acked_at_kill} acked ({len(sent)} sent) in {load_s:.2f} s; "
                f"FIN'd before kill {len(fin_at)}; restart {start_s * 1000:.0f} ms; delivered after restart "
                f"{len(after)} (drained in {drain_s:.2f} s); lost {len(lost)}; redelivered {len(redelivered)} "
                f"(FIN'd >{(FIN_WINDOW_S + FIN_SLACK_S) * 1000:.0f} ms before the kill: {len(outside)}); "
                f"stale {len(stale)}; dup {len(dup)}; id changed {len(newid)}"
                + (f"; recovery warnings: {len(torn)}" if torn else ""))
            for ln in torn[:3]:
                log(f"  log: {ln}")
            if lost:
                failures.append(f"round {rnd}: {len(lost)} acknowledged messages lost, e.g. "
                                f"{[b[:30] for b in sorted(lost)[:3]]}")
            if unknown:
                failures.append(f"round {rnd}: {len(unknown)} bodies delivered that nobody published, e.g. "
                                f"{[b[:30] for b in sorted(unknown)[:3]]}")
            if not drained:
                failures.append(f"round {rnd}: the channel did not drain within 15 s "
                                f"(stats {srv.channel_stats()})")
            if outside:
                ex = sorted(outside, key=lambda b: fin_at[b])[0]
                log(f"  NOTE: {len(outside)} redelivered bodies had their FIN sent more than "
                    f"{(FIN_WINDOW_S + FIN_SLACK_S) * 1000:.0f} ms before the kill (docs: 200 ms), "
                    f"earliest {(kill_t - fin_at[ex]) * 1000:.0f} ms: {ex[:40]!r}")
            if stale:
                log(f"  NOTE: {len(stale)} bodies of earlier rounds (drained and FIN'd) came back")
            if newid:
                b = sorted(newid)[0]
                log(f"  NOTE: {len(newid)} redelivered after the restart with another id, e.g. {b[:40]!r}: "
                    f"{load.ids[b]!r} -> {got[b][0][0]!r}")
            tot["acked"] += len(acked)
            tot["sent"] += len(sent)
            tot["fins"] += len(fin_at)
            tot["lost"] += len(lost)
            tot["redelivered"] += len(redelivered)
            tot["outside"] += len(outside)
            tot["stale"] += len(stale)
            tot["dup"] += len(dup)
            tot["newid"] += len(newid)
        rc = srv.kill(signal.SIGTERM, wait=15)
        if rc != 0:
            failures.append(f"the server exited with status {rc} on SIGTERM")
    finally:
        srv.kill(signal.SIGKILL)
    log(f"totals: kills {tot['kills']}, messages acknowledged {tot['acked']} (sent {tot['sent']}), "
        f"FIN'd before a kill {tot['fins']}, lost {tot['lost']}, redelivered {tot['redelivered']} "
        f"(of which FIN'd >300 ms before the kill: {tot['outside']}), stale {tot['stale']}, "
        f"duplicates in a drain {tot['dup']}, id changed {tot['newid']}")
    for f in failures:
        log(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
