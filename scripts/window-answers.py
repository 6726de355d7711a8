#!/usr/bin/env python3
"""
How fast a server answered its readers' open windows, from a capture at the client
(`scripts/soak-tap.ts --client-pcap FILE`: FILE.none for Chimney, FILE.linux for Linux serving).

An "open window" is a client ACK that acknowledges everything the server has sent and offers at
least one MSS: from then on only the server holds the download up. Its answer is the server's next
data segment on that connection. Answers are printed by second of the capture, with how many came
after a segment carrying PSH (Chimney sets PSH on the segment that empties its send buffer, so
there the sender had run dry and waited for its writer), and, given the client's gaps
(`--stalls FILE.<run>`), how many of them had the data arrive during the gap (the server's) and how
many had it queued in the client's kernel before the gap began (the client's own event loop).

    python3 scripts/window-answers.py /tmp/c.none [--stalls /tmp/s.none] [--port 80]

Needs tshark. Linux sets PSH by its own rules, so the PSH column means "ran dry" for Chimney only.
"""

import argparse
import bisect
import collections
import json
import subprocess

MSS = 1448


def packets(pcap, port):
    """(ms, to_client, client_port, seq, ack, len, window, flags) for every TCP segment."""
    out = subprocess.run(
        ['tshark', '-r', pcap, '-T', 'fields', '-o', 'tcp.relative_sequence_numbers:TRUE',
         '-e', 'frame.time_epoch', '-e', 'tcp.srcport', '-e', 'tcp.dstport', '-e', 'tcp.seq',
         '-e', 'tcp.ack', '-e', 'tcp.len', '-e', 'tcp.window_size', '-e', 'tcp.flags'],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        f = line.split('\t')
        if len(f) < 8 or not f[1]:
            continue
        to_client = int(f[1]) == port
        yield (float(f[0]) * 1000, to_client, int(f[2] if to_client else f[1]), int(f[3]),
               int(f[4]), int(f[5]), int(f[6]), int(f[7], 16))


def quantile(xs, q):
    return round(xs[int(q * (len(xs) - 1))], 1) if xs else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument('pcap')
    p.add_argument('--stalls', help="the client's gaps (soak-tap --stalls FILE.<run>)")
    p.add_argument('--port', type=int, default=80, help="the server's port")
    a = p.parse_args()
    conns = collections.defaultdict(lambda: {'sent': 0, 'open': None, 'dry': False})
    arrivals = collections.defaultdict(list)
    answers = collections.defaultdict(list)
    sent_by_second = collections.Counter()
    t0 = None
    for t, to_client, cport, seq, ack, length, win, flags in packets(a.pcap, a.port):
        t0 = t if t0 is None else t0
        c = conns[cport]
        if to_client:
            if length == 0:
                continue
            arrivals[cport].append(t)
            sent_by_second[int((t - t0) / 1000)] += length
            if c['open'] is not None:
                answers[int((c['open'] - t0) / 1000)].append((t - c['open'], c['dry']))
                c['open'] = None
            c['dry'] = bool(flags & 0x08)
            c['sent'] = max(c['sent'], seq + length)
        elif c['open'] is None and c['sent'] > 0 and ack >= c['sent'] and win >= MSS:
            c['open'] = t
    every = sorted(d for v in answers.values() for d, _ in v)
    print(json.dumps({'answers': len(every), 'p50': quantile(every, 0.5), 'p90': quantile(every, 0.9),
                      'p99': quantile(every, 0.99), 'max': quantile(every, 1)}))
    for s in sorted(answers):
        v = sorted(d for d, _ in answers[s])
        late = [dry for d, dry in answers[s] if d > 5]
        print(json.dumps({'second': s, 'answers': len(v), 'p50': quantile(v, 0.5), 'p90': quantile(v, 0.9),
                          'max': quantile(v, 1), 'late': len(late), 'lateAfterDry': sum(late),
                          'MBsent': round(sent_by_second[s] / 1e6, 1)}))
    if a.stalls:
        with open(a.stalls) as f:
            stalls = json.load(f)
        server = client = 0
        for start, end, _conn, cport in stalls:
            ts = arrivals.get(cport, [])
            i = bisect.bisect_right(ts, end) - 1
            if i >= 0 and ts[i] >= start - 1:
                server += 1
            else:
                client += 1
        print(json.dumps({'stalls': len(stalls), 'dataArrivedDuringGap': server, 'dataQueuedBeforeGap': client}))


if __name__ == '__main__':
    main()
