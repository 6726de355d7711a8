#!/usr/bin/env python3
"""Where a connect burst's SYNs went, from `soak-tap.ts --tap-pcap F` captures (the kernel's own
timestamps of each SYN queued for Chimney and each SYN-ACK it wrote): per SYN the client sent,
whether a SYN-ACK echoing its TSval came and how long after, and each resend by what had become of
the SYN before it (answered only after the resend, a SYN-ACK out before it, or never answered).

    python3 scripts/syn-answers.py F.none.<tap0> F.none.<tap1>
"""
import subprocess, sys, collections
files = sys.argv[1:]
ev = []
for f in files:
    out = subprocess.run(['tshark', '-r', f, '-Y', 'tcp.flags.syn==1', '-T', 'fields',
        '-e', 'frame.time_epoch', '-e', 'ip.src', '-e', 'tcp.srcport', '-e', 'ip.dst', '-e', 'tcp.dstport',
        '-e', 'tcp.flags.ack', '-e', 'tcp.options.timestamp.tsval', '-e', 'tcp.options.timestamp.tsecr'],
        capture_output=True, text=True).stdout
    for line in out.splitlines():
        p = line.split('\t')
        if len(p) < 8: continue
        ack = p[5] in ('1', 'True')
        ev.append((float(p[0]), p[1], int(p[2]), p[3], int(p[4]), ack, p[6], p[7]))
ev.sort()
syns = collections.defaultdict(list)     # client tuple -> [(t, tsval)]
acks = collections.defaultdict(list)     # client tuple -> [(t, tsecr)]
for t, s, sp, d, dp, ack, tsv, tse in ev:
    if not ack: syns[(s, sp)].append((t, tsv))
    else: acks[(d, dp)].append((t, tse))
def pct(xs, q):
    if not xs: return float('nan')
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
conns = len(syns); nsyn = sum(len(v) for v in syns.values()); nack = sum(len(v) for v in acks.values())
first_wait = []          # first SYN -> first SYN-ACK, ms
per_syn_wait = []        # each SYN -> SYN-ACK echoing it, ms
unanswered = 0           # SYNs no SYN-ACK ever echoed
resend_after = collections.Counter()  # why each resend: state of the SYN before it at the resend
for k, ss in syns.items():
    aa = acks.get(k, [])
    if aa: first_wait.append((aa[0][0] - ss[0][0]) * 1000)
    for i, (t, tsv) in enumerate(ss):
        echo = [a for a in aa if a[1] == tsv and a[0] >= t]
        if echo: per_syn_wait.append((echo[0][0] - t) * 1000)
        else: unanswered += 1
        if i + 1 < len(ss):
            tn = ss[i + 1][0]
            anyack = [a for a in aa if t <= a[0] < tn]
            if anyack: resend_after['a SYN-ACK went out before the resend (lost or not taken by the client)'] += 1
            elif echo: resend_after['its SYN-ACK went out only after the resend (answered late)'] += 1
            else: resend_after['never answered'] += 1
print(f'connections {conns}, SYNs {nsyn} (resent {nsyn - conns}), SYN-ACKs {nack} ({nack - len(acks)} beyond one a connection), with no SYN-ACK {conns - len(acks)}')
print('first SYN -> first SYN-ACK ms p50 %.0f p90 %.0f p99 %.0f max %.0f' % (pct(first_wait, .5), pct(first_wait, .9), pct(first_wait, .99), max(first_wait or [0])))
print('each SYN -> its SYN-ACK ms p50 %.0f p90 %.0f p99 %.0f; SYNs never echoed %d' % (pct(per_syn_wait, .5), pct(per_syn_wait, .9), pct(per_syn_wait, .99), unanswered))
over1 = sum(1 for w in first_wait if w >= 1000)
print(f'connections whose first SYN-ACK came 1 s or more after the first SYN: {over1}')
for why, n in resend_after.most_common(): print(f'resends: {n} after a SYN whose state was: {why}')
