#!/usr/bin/env python3
"""
Where each connection's first byte went, joined by the client's port: the client's own times
(`scripts/soak-tap.ts --times FILE`, FILE.<fault>) beside serve's accepts (CHIMNEY_LAG_LOG, a team's
`accepts`: made, placed or born, placement, accept queue, first write, the peer's port).

    python3 scripts/first-byte-timeline.py LAG_FILE TIMES_FILE

Prints, per part, p10/p50/p90/p99/max in ms over the connections found in both:
  handshake   the client's connect to its connected (its SYN to the SYN-ACK it answered)
  ack-in      the client's connected to the host's accept (its handshake ACK taken: may be < 0,
              the client's loop notes the connect late)
  placement   the accept's wait for its placement (0: born at a NIC)
  queue       TcpServer's accept queue
  write       the application's turn to its first write
  wire        the first write to the client's first byte
  first-byte  the client's connected to its first byte (tap-load.py's figure)
then one connection in every twelfth of the burst, in connect order.
"""

import json
import sys


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    lag = json.load(open(sys.argv[1]))
    times = json.load(open(sys.argv[2]))
    acc = {a[5]: a for a in lag['accepts'] if len(a) > 5 and a[5] > 0}
    rows = []
    for port, asked, connected, first in times:
        a = acc.get(port)
        if a is None:
            continue
        made, placed, place, queue, write, _ = a
        rows.append(
            {
                'handshake': connected - asked,
                'ack-in': made - connected,
                'placement': place,
                'queue': queue,
                'write': write,
                'wire': first - (made + place + queue + write),
                'first-byte': first - connected,
                'placed': placed,
                'asked': asked,
            }
        )
    print(f'joined {len(rows)} of {len(times)} (accepts {len(lag["accepts"])}, placed {sum(r["placed"] for r in rows)})')
    if not rows:
        return 1
    parts = ['handshake', 'ack-in', 'placement', 'queue', 'write', 'wire', 'first-byte']
    for k in parts:
        v = [r[k] for r in rows]
        print(
            f'{k:11s} p10 {pct(v, 0.1):8.1f} p50 {pct(v, 0.5):8.1f} p90 {pct(v, 0.9):8.1f}'
            f' p99 {pct(v, 0.99):8.1f} max {max(v):8.1f}'
        )
    rows.sort(key=lambda r: r['asked'])
    t0 = rows[0]['asked']
    print('connect at (ms) ' + ' '.join(f'{k:>10s}' for k in parts))
    for r in rows[:: max(1, len(rows) // 12)]:
        print(f'{r["asked"] - t0:15.0f} ' + ' '.join(f'{r[k]:10.1f}' for k in parts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
