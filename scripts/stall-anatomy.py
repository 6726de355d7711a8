#!/usr/bin/env python3
"""
What each stall a download saw waited for, from a soak run's `--stalls` and `--tap-pcap` files
(scripts/soak-tap.ts): the TAPs' captures carry the kernel's timestamps of when a frame was queued
for Chimney and when Chimney wrote one, so for each gap in a download's data the last frame from
the client before the data that ended it, and the state of the sender then, tell who held it.

    python3 scripts/stall-anatomy.py --stalls S.none --taps T.none.cht-xx0 T.none.cht-xx1 [--min-ms 50]

Classes (a stall of --min-ms or more, from its start to the data that ended it):
  refill   the sender had sent everything it held (its last segment carried PSH, which Chimney sets
           on the segment that empties the send buffer) and the client had acknowledged it all, and
           then sat over 20 ms: the data waited for the application to write more. With a team
           (`--workers`) that is a round trip from the NIC's worker to serve's main thread and back.
  sender   the sender held data it could send (unacknowledged or unsent) and sat over 20 ms after
           the client's last frame: the thread running the connection held it.
  client   the data followed the client's last frame within 20 ms: the client's window update (its
           read) came late, not the sender.
Each is also split by `wrong member` (the client's frame came in on the other TAP than the data
went out: a frame steered to the member that does not run the connection) and by ring class: the
most bytes the connection ever had in flight on the wire (a send ring bounds it) at or under
--small-ring bytes, or over. Prints one JSON object.
"""

import argparse
import collections
import json
import subprocess

SAT_MS = 20
FIELDS = ('frame.time_epoch', 'tcp.srcport', 'tcp.dstport', 'tcp.seq_raw', 'tcp.ack_raw', 'tcp.len', 'tcp.flags.push')


def frames(path):
    """Per client port: (ms, from client, seq, ack, len, psh, tap) in time order."""
    out = subprocess.run(
        ['tshark', '-r', path, '-Y', 'tcp', '-T', 'fields', '-E', 'separator= ']
        + [x for f in FIELDS for x in ('-e', f)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by = collections.defaultdict(list)
    for line in out.splitlines():
        p = line.split()
        if len(p) < 7:
            continue
        sport, dport = int(p[1]), int(p[2])
        client = dport == 80
        by[sport if client else dport].append(
            (float(p[0]) * 1000, client, int(p[3]), int(p[4]), int(p[5]), p[6] in ('1', 'True'), path)
        )
    return by


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--stalls', required=True, help="soak-tap's --stalls file of one run (FILE.<fault>)")
    ap.add_argument('--taps', nargs='+', required=True, help="soak-tap's --tap-pcap files of the same run")
    ap.add_argument('--min-ms', type=float, default=50)
    ap.add_argument('--small-ring', type=int, default=36864)
    ap.add_argument('--after-ready', action='store_true', help='only stalls that began after every download had data')
    a = ap.parse_args()
    stalls = json.load(open(a.stalls))
    mark = 0
    if a.after_ready:
        mark = json.load(open(a.stalls + '.owners'))['at']
    conns = collections.defaultdict(list)
    for t in a.taps:
        for port, fl in frames(t).items():
            conns[port].extend(fl)
    inflight = {}
    for port, fl in conns.items():
        fl.sort(key=lambda f: f[0])
        una, most = None, 0
        for f in fl:
            if f[1]:
                una = f[3]
            elif f[4] > 0 and una is not None:
                n = (f[2] + f[4] - una) % (1 << 32)
                if n < 1 << 24:
                    most = max(most, n)
        inflight[port] = most
    classes = collections.defaultdict(lambda: {'stalls': 0, 'ms': 0.0, 'longest': 0.0})
    lags = collections.defaultdict(list)
    ring_conns = collections.Counter('small' if v <= a.small_ring else 'large' for v in inflight.values())
    for start, end, _conn, port in stalls:
        if end - start < a.min_ms or start < mark:
            continue
        fl = conns.get(port, [])
        data = next((f for f in fl if not f[1] and f[4] > 0 and f[0] > start), None)
        if data is None:
            kind = 'not captured'
            wrong = False
        else:
            before = [f for f in fl if f[1] and f[0] < data[0]]
            if not before:
                kind, wrong = 'not captured', False
            else:
                last = before[-1]
                lag = data[0] - last[0]
                wrong = last[6] != data[6]
                sent = [f for f in fl if not f[1] and f[4] > 0 and f[0] < last[0]]
                drained = bool(sent) and sent[-1][5] and (last[3] - (sent[-1][2] + sent[-1][4])) % (1 << 32) == 0
                kind = 'client' if lag <= SAT_MS else 'refill' if drained else 'sender'
                lags[kind].append(lag)
        ring = 'small' if inflight.get(port, 0) <= a.small_ring else 'large'
        for k in (kind, f'{kind}, wrong member' if wrong else None, f'{kind}, {ring} ring'):
            if k is None:
                continue
            c = classes[k]
            c['stalls'] += 1
            c['ms'] += end - start
            c['longest'] = max(c['longest'], end - start)
    for c in classes.values():
        c['ms'] = round(c['ms'])
        c['longest'] = round(c['longest'], 1)
    lag_pct = {}
    for k, v in lags.items():
        v.sort()
        lag_pct[k] = {'p50': round(v[len(v) // 2], 1), 'p90': round(v[int(len(v) * 0.9)], 1), 'max': round(v[-1], 1)}
    print(
        json.dumps(
            {
                'minMs': a.min_ms,
                'classes': dict(sorted(classes.items())),
                'lastClientFrameToDataMs': lag_pct,
                'connsByRing': dict(ring_conns),
            },
            indent=1,
        )
    )


if __name__ == '__main__':
    main()
