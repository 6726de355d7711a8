#!/usr/bin/env python3
"""
Many slow HTTP downloads at once from one Linux process, for Chimney's tests and benchmarks at
scale against the kernel (curl processes do not scale to a thousand on two cores).

Each connection sends `GET /bytes/SIZE`, reads the body at about RATE bytes/s (one shared ticker
resumes the connections that are under their budget: no timer per connection), checks every byte
against the pattern (byte i = i mod 251), its length and its SHA-256, and records the gaps in data
arrival while it wanted data. A small receive buffer keeps the kernel from hiding a stall of the
sender behind what it already holds.

    python3 scripts/tap-load.py --host 10.9.0.2 --connections 1000 --size 3000000 --rate 150000

Prints one JSON object on stdout:
  {"connections", "ok", "failed", "resets", "errors": {kind: count}, "firstErrors": [...],
   "maxStallMs", "p99StallMs", "maxFirstByteMs", "p99FirstByteMs", "p50FirstByteMs" (from the
   connection's handshake done), "p50FirstByteFromOpenMs", "p99FirstByteFromOpenMs",
   "maxFirstByteFromOpenMs" (from its connect: its SYN), "openSpreadMs" (the first connect to the
   last), "p99OpenLateMs", "maxOpenLateMs" (each connect after its place in the ramp), "wallMs",
   "stalls": [[startEpochMs, endEpochMs, conn, localPort], ...],
   "times": [[localPort, connectEpochMs, connectedEpochMs, firstByteEpochMs], ...]}
`stalls` lists every gap longer than --stall-ms (epoch ms, so a caller can line them up with a
fault it injected). Exit status 0 when every download is intact, 1 otherwise.

The connects keep to the ramp's clock (open_on_schedule): connection i goes at --ramp-ms x i / N
however busy the loop is with the downloads already open. Paced by sleeps between groups instead,
the ramp stretched with the loop's work: at 5,000 downloads against Chimney it took 2-4 s in some
runs and 13-18 s in others, whichever way the first answers went (a server quick to answer kept
the loop busy and so got a gentler burst), and the soak's figures came in two kinds (BENCHMARKS.md,
tap-team, session 51). The first-byte figures from the handshake's end leave out a wait for the
SYN-ACK; the ones from the connect do not.
"""

import argparse
import asyncio
import hashlib
import heapq
import json
import resource
import socket
import sys
import time

PERIOD = 251


def pattern(n: int) -> bytes:
    return bytes(i % PERIOD for i in range(n))


class Download(asyncio.Protocol):
    def __init__(self, idx, run):
        self.idx = idx
        self.run = run
        self.transport = None
        self.head = b''
        self.body_left = -1
        self.got = 0
        self.offset = 0
        self.sha = hashlib.sha256()
        self.paused = False
        self.want_since = None
        self.max_gap = 0.0
        self.gaps = []
        self.error = None
        self.done = asyncio.get_running_loop().create_future()
        self.started = None
        self.asked = None
        self.ttfb = None
        self.port = 0

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info('socket')
        self.port = sock.getsockname()[1]
        if self.run.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.run.rcvbuf)
        self.started = time.monotonic()
        transport.write(
            f'GET /bytes/{self.run.size} HTTP/1.1\r\nHost: chimney\r\nConnection: close\r\n\r\n'.encode()
        )
        self.want_since = time.monotonic()

    def data_received(self, data):
        now = time.monotonic()
        if self.ttfb is None:
            self.ttfb = now - self.started
        elif self.want_since is not None:
            gap = now - self.want_since
            if gap > self.max_gap:
                self.max_gap = gap
            if gap * 1000 >= self.run.stall_ms:
                self.gaps.append((self.run.epoch(self.want_since), self.run.epoch(now), self.idx, self.port))
        self.want_since = now
        if self.body_left < 0:
            self.head += data
            end = self.head.find(b'\r\n\r\n')
            if end < 0:
                if len(self.head) > 8192:
                    self.fail('bad-header')
                return
            hdr = self.head[:end].decode('latin-1').lower()
            data = self.head[end + 4 :]
            self.head = b''
            if not hdr.startswith('http/1.1 200'):
                self.fail('status')
                return
            length = None
            for line in hdr.split('\r\n')[1:]:
                k, _, v = line.partition(':')
                if k.strip() == 'content-length':
                    length = int(v.strip())
            if length != self.run.size:
                self.fail('content-length')
                return
            self.body_left = length
        if len(data) > self.body_left:
            self.fail('too-long')
            return
        # The pattern repeats every 251 bytes: compare against the block at this offset.
        pat = self.run.pattern
        off = self.offset % PERIOD
        mv = memoryview(data)
        pos = 0
        while pos < len(data):
            k = min(len(data) - pos, len(pat) - off - PERIOD)
            if mv[pos : pos + k] != pat[off : off + k]:
                self.fail('corrupt')
                return
            pos += k
            off = (off + k) % PERIOD
        self.offset += len(data)
        self.sha.update(data)
        self.body_left -= len(data)
        self.got += len(data)
        self.run.total += len(data)
        if self.body_left == 0:
            self.want_since = None
            if self.sha.hexdigest() != self.run.digest:
                self.fail('digest')
                return
            self.transport.close()
            if not self.done.done():
                self.done.set_result(True)
            return
        if self.run.rate and self.got > self.run.allowance(self.started):
            self.transport.pause_reading()
            self.paused = True
            self.want_since = None
            # Under its budget again once the rate has paid for what it got: resumed then.
            heapq.heappush(self.run.paused, (self.run.due(self.started, self.got), self.idx, self))

    def resume(self):
        self.paused = False
        self.want_since = time.monotonic()
        self.transport.resume_reading()

    def fail(self, kind):
        if self.error is None:
            self.error = kind
        if self.transport is not None:
            self.transport.abort()
        if not self.done.done():
            self.done.set_result(False)

    def connection_lost(self, exc):
        if self.done.done():
            return
        if exc is None:
            self.error = self.error or ('short' if self.body_left != 0 else None)
        elif isinstance(exc, ConnectionResetError):
            self.error = 'reset'
        else:
            self.error = type(exc).__name__
        self.done.set_result(self.error is None)


class Run:
    def __init__(self, a):
        self.size = a.size
        self.rate = a.rate
        self.rcvbuf = a.rcvbuf
        self.stall_ms = a.stall_ms
        self.pattern = pattern(65536 + 2 * PERIOD)
        self.digest = hashlib.sha256((pattern(PERIOD) * (a.size // PERIOD + 1))[: a.size]).hexdigest()
        # Paused downloads by when each is under its budget again, [(monotonic s, idx, download)]:
        # the ticker looks at the due ones only. A scan of all of them every tick cost the client's
        # one thread about 2 ms a tick with 5,000 paused (a fifth of a core at 100 ticks a second,
        # on the two cores serve shares), and its connects and reads waited behind it.
        self.paused = []
        self.total = 0
        self.mono0 = time.monotonic()
        self.epoch0 = time.time()
        # A short burst up front, then the rate: about 50 ms of data ahead of the ticker.
        self.burst = max(16384, a.rate // 20) if a.rate else 0

    def epoch(self, mono):
        return round((self.epoch0 + (mono - self.mono0)) * 1000, 1)

    def allowance(self, started):
        return self.burst + self.rate * (time.monotonic() - started)

    def due(self, started, got):
        """When allowance(started) reaches got."""
        return started + (got - self.burst) / self.rate


async def ticker(run, tick):
    while True:
        await asyncio.sleep(tick)
        paused = run.paused
        now = time.monotonic()
        while paused and paused[0][0] <= now:
            d = heapq.heappop(paused)[2]
            if not d.done.done():
                d.resume()


async def one(loop, run, idx, host, port, timeout, conns):
    d = Download(idx, run)
    conns.append(d)
    d.asked = time.monotonic()
    try:
        await asyncio.wait_for(loop.create_connection(lambda: d, host, port), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is counted, none is fatal
        d.error = 'connect-' + type(e).__name__
        return d
    try:
        await asyncio.wait_for(d.done, timeout)
    except asyncio.TimeoutError:
        d.fail('timeout')
    return d


OPEN_GROUP = 50


async def open_on_schedule(n, ramp_s, start, now=time.monotonic, sleep=asyncio.sleep):
    """
    start(i) for each of n connections, in groups of OPEN_GROUP, group k at ramp_s x k x
    OPEN_GROUP / n after the first (all at once when ramp_s is 0). The schedule is the clock's,
    not the loop's: a wake that comes late (the loop busy with the downloads already open) starts
    every group then due at once, so the ramp lasts ramp_s plus at most one late wake.
    """
    t0 = now()
    i = 0
    while i < n:
        if ramp_s > 0:
            groups = int((now() - t0) * n / (ramp_s * OPEN_GROUP)) + 1
            upto = min(n, groups * OPEN_GROUP)
        else:
            upto = n
        while i < upto:
            start(i)
            i += 1
        if i < n:
            await sleep(max(0.0, t0 + ramp_s * i / n - now()))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument('--host', required=True)
    p.add_argument('--port', type=int, default=80)
    p.add_argument('--connections', type=int, default=1000)
    p.add_argument('--size', type=int, default=3_000_000)
    p.add_argument('--rate', type=int, default=150_000, help='bytes/s per connection, 0: unlimited')
    p.add_argument('--rcvbuf', type=int, default=32768, help='SO_RCVBUF, 0: the kernel default')
    p.add_argument('--ramp-ms', type=int, default=2000, help='open the connections over this long')
    p.add_argument('--stall-ms', type=float, default=20, help='record gaps at least this long')
    p.add_argument('--timeout', type=float, default=300)
    p.add_argument('--ready-file', help='touch this file once every connection has received data')
    a = p.parse_args()
    # One descriptor per connection: thousands are more than the usual soft limit of 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.connections + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    run = Run(a)
    loop = asyncio.get_running_loop()
    tick = asyncio.create_task(ticker(run, 0.01))
    conns = []
    t0 = time.monotonic()
    tasks = []
    ramp = a.ramp_ms / 1000
    due = {}

    def start(i):
        due[i] = t0 + ramp * i / a.connections
        tasks.append(asyncio.create_task(one(loop, run, i, a.host, a.port, a.timeout, conns)))

    await open_on_schedule(a.connections, ramp, start)
    if a.ready_file:

        async def ready():
            while not all(d.got > 0 or d.done.done() for d in conns) or len(conns) < a.connections:
                await asyncio.sleep(0.05)
            open(a.ready_file, 'w').close()

        asyncio.create_task(ready())
    done = await asyncio.gather(*tasks)
    tick.cancel()
    wall = time.monotonic() - t0
    errors = {}
    first = []
    for d in done:
        if d.error:
            errors[d.error] = errors.get(d.error, 0) + 1
            if len(first) < 10:
                first.append({'conn': d.idx, 'error': d.error, 'got': d.got})
    gaps = sorted(d.max_gap for d in done)
    ttfb = sorted(d.ttfb for d in done if d.ttfb is not None)
    from_open = sorted(d.started + d.ttfb - d.asked for d in done if d.ttfb is not None)
    asked = [d.asked for d in done if d.asked is not None]
    late = sorted(max(0.0, d.asked - due[d.idx]) for d in done if d.asked is not None)
    stalls = [g for d in done for g in d.gaps]
    ok = sum(1 for d in done if d.error is None)
    out = {
        'connections': a.connections,
        'bytesEach': a.size,
        'ok': ok,
        'failed': a.connections - ok,
        'resets': errors.get('reset', 0),
        'errors': errors,
        'firstErrors': first,
        'maxStallMs': round(gaps[-1] * 1000, 1) if gaps else 0,
        'p99StallMs': round(gaps[int(len(gaps) * 0.99) - 1] * 1000, 1) if gaps else 0,
        'maxFirstByteMs': round(ttfb[-1] * 1000, 1) if ttfb else 0,
        'p99FirstByteMs': round(ttfb[int(len(ttfb) * 0.99) - 1] * 1000, 1) if ttfb else 0,
        'p50FirstByteMs': round(ttfb[len(ttfb) // 2] * 1000, 1) if ttfb else 0,
        'maxFirstByteFromOpenMs': round(from_open[-1] * 1000, 1) if from_open else 0,
        'p99FirstByteFromOpenMs': round(from_open[int(len(from_open) * 0.99) - 1] * 1000, 1) if from_open else 0,
        'p50FirstByteFromOpenMs': round(from_open[len(from_open) // 2] * 1000, 1) if from_open else 0,
        'openSpreadMs': round((max(asked) - min(asked)) * 1000) if asked else 0,
        'p99OpenLateMs': round(late[int(len(late) * 0.99) - 1] * 1000, 1) if late else 0,
        'maxOpenLateMs': round(late[-1] * 1000, 1) if late else 0,
        'wallMs': round(wall * 1000),
        'bytes': run.total,
        'stalls': stalls,
        # Each connection's way to its first byte, epoch ms: [port, connect asked (its SYN),
        # connected (the SYN-ACK answered), first byte], to line up with serve's accepts.
        'times': [
            [d.port, run.epoch(d.asked), run.epoch(d.started), run.epoch(d.started + d.ttfb)]
            for d in done
            if d.ttfb is not None
        ],
    }
    json.dump(out, sys.stdout)
    sys.stdout.write('\n')
    return 0 if ok == a.connections else 1


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
