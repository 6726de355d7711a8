/**
 * Nagle's rule with Minshall's variant on the wire, Chimney's sender beside Linux's own (issue 10):
 * an application with Nagle on writes 700 bytes every 3 ms to a Python reader in the kernel that
 * reads every 20 ms, so that it acknowledges late (every second segment, on its delayed-ACK timer,
 * or as a read empties its buffer) rather than each segment as it lands. The same writes from a Python sender in a second namespace on the same bridge are the
 * reference. A capture on the reader's veth (offloads off: every frame is a wire segment, cut
 * from any TSO super-segment before the capture point) must show, for both senders:
 * - no segment shorter than the MSS while an earlier short one is unacknowledged (Linux's
 *   tcp_minshall_check, which tcp_nagle_check applies to a short segment at the end of what is
 *   queued and tcp_mss_split_point to the short tail of a longer piece: writes that pile up while
 *   a short segment waits for its ACK go as full segments, their short rest waiting), but the
 *   last, which goes with the FIN, and no more than the tail loss probes counted (a probe sends
 *   new data whatever Nagle says);
 * - full segments among them: the writes do pile up behind the late ACKs;
 * - everything written, intact;
 * and Chimney no more short segments than Linux, give or take a quarter. Sending the short tail
 * of what was queued with the full segments before it, Chimney had 96-100 short segments behind
 * an unacknowledged one, of about 180 (Linux: 0-1 of about 88).
 *
 * The capture sees the reader's ACKs before either sender does, so a short segment it counts as
 * unacknowledged was unacknowledged for the sender too.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readCapture, startCapture } from '../helpers/tshark.ts';
import { type InProc, startInProc } from './inproc.ts';
import { interopGate, type Lab, makeLab } from './lab.ts';

const gate = interopGate(['tshark', 'ethtool', 'python3']);
const PORT = 9;
const PIECE = 700;
const WRITES = 400;
const EVERY_MS = 3;
/** Between the reader's reads: its ACKs come on its delayed-ACK rules, not as each segment lands. */
const READ_PAUSE_S = 0.02;
const BLOCK = Buffer.from(Array.from({ length: PIECE }, (_, i) => (i * 7) & 0xff));
const EXPECTED = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < WRITES; i++) h.update(BLOCK);
  return `${PIECE * WRITES} ${h.digest('hex')}`;
})();

/**
 * Read until the end, pausing between reads (a read acknowledges what it emptied from the buffer
 * when the segment was pushed: reading at once, the reader acknowledged every segment as it came,
 * and no write waited); print the length and SHA-256.
 */
const READER = `
import hashlib, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
h = hashlib.sha256()
got = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    h.update(d)
    got += len(d)
    time.sleep(float(sys.argv[3]))
print(got, h.hexdigest())
`;

/** Linux's sender: accept one connection, write the pieces on Chimney's schedule, close. */
const SENDER = `
import socket, sys, time
ip, port, piece, writes, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
block = bytes((i * 7) & 0xff for i in range(piece))
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((ip, port))
l.listen(1)
print('listening', flush=True)
c, _ = l.accept()
t0 = time.monotonic()
for i in range(writes):
    c.sendall(block)
    time.sleep(max(0.0, t0 + (i + 1) * every - time.monotonic()))
c.close()
`;

interface Shape {
  mss: number;
  full: number;
  short: number;
  /** Short segments sent while an earlier short one was unacknowledged (but the last). */
  second: string[];
}

const diff = (a: number, b: number) => ((a - b) >>> 0) | 0;

/** The new-data segments `from` sent, against the reader's ACKs, in capture order. */
function shape(rows: string[], from: string): Shape {
  const v: Shape = { mss: 0, full: 0, short: 0, second: [] };
  const segs = rows.map((r) => {
    const [src, dst, syn, seq, ack, len] = r.split('|');
    return {
      src,
      dst,
      syn: syn === '1' || syn === 'True',
      seq: Number(seq),
      ack: Number(ack),
      len: Number(len),
    };
  });
  const mine = segs.filter((s) => s.src === from || s.dst === from);
  v.mss = Math.max(0, ...mine.filter((s) => s.src === from).map((s) => s.len));
  const synAck = mine.find((s) => s.syn && s.src === from);
  assert.ok(synAck, `the handshake of ${from} is in the capture`);
  const at = (seq: number) => (seq - synAck.seq - 1) >>> 0;
  let high = (synAck.seq + 1) >>> 0;
  /** End of the last short segment sent, while unacknowledged (-1: none). */
  let smallEnd = -1;
  for (const s of mine) {
    if (s.syn) continue;
    if (s.src !== from) {
      if (smallEnd !== -1 && diff(s.ack, smallEnd) >= 0) smallEnd = -1;
      continue;
    }
    // New data only: a resend is not the application's pacing.
    if (s.len === 0 || diff(s.seq, high) < 0) continue;
    high = (s.seq + s.len) >>> 0;
    if (s.len >= v.mss) {
      v.full++;
      continue;
    }
    v.short++;
    // The last goes with the FIN, which Nagle never holds (tcp_nagle_test).
    if (smallEnd !== -1 && at(high) !== PIECE * WRITES)
      v.second.push(
        `+${at(s.seq)} len ${s.len} while the short one ending +${at(smallEnd)} is unacknowledged`,
      );
    smallEnd = high;
  }
  return v;
}

/** Remove the Linux sender's namespace (and with it its veth pair), if any. */
function dropNs2(l: Lab): void {
  if (!ns2) return;
  try {
    l.ip('netns', 'del', ns2);
  } catch {}
}

let lab: Lab | null = null;
let chimney: InProc | null = null;
let ns2 = '';
const read = { chimney: '', linux: '' };
const shapes: { chimney?: Shape; linux?: Shape } = {};
const probes = { chimney: 0, linux: 0 };

describe('Nagle with Minshall’s variant: small writes into a delayed-ACK reader, Chimney beside Linux', {
  skip: gate.skip,
  timeout: 180_000,
}, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'nagl', subnet: 24, offloads: false }, gate.reason);
    const l = lab!;
    // Linux's sender: a second namespace on the same bridge, so its segments cross the same veth
    // to the same reader; offloads off on its veth too.
    ns2 = `${l.ns}s`;
    const v2 = `${l.veth}s`;
    const linuxIp = `10.9.${l.subnet}.9`;
    // Left by a run of this process id that crashed (the lab's own devices it removes itself).
    dropNs2(l);
    for (const argv of [
      ['netns', 'add', ns2],
      ['link', 'add', v2, 'type', 'veth', 'peer', 'name', `${l.veth}t`, 'netns', ns2],
      ['link', 'set', 'dev', v2, 'master', l.bridge, 'up'],
      ['-n', ns2, 'addr', 'add', `${linuxIp}/24`, 'dev', `${l.veth}t`],
      ['-n', ns2, 'link', 'set', 'dev', `${l.veth}t`, 'up'],
    ])
      l.ip(...argv);
    for (const [ns, dev] of [
      ['', v2],
      [ns2, `${l.veth}t`],
    ]) {
      const r = await l.run(
        [
          ...(ns ? ['ip', 'netns', 'exec', ns] : []),
          'ethtool',
          '-K',
          dev,
          'tx',
          'off',
          'tso',
          'off',
          'gso',
          'off',
        ],
        10_000,
      );
      assert.equal(r.code, 0, r.stderr);
    }

    chimney = startInProc(l, 0, { offload: true });
    chimney.host
      .createServer((s) => {
        s.on('error', () => {});
        // Piece i is due EVERY_MS * i after the first; a timer that fires late writes every piece
        // that is due. A sender that only waited EVERY_MS after each write fell behind on a loaded
        // machine, took three times as long and sent twice the short segments (each alone behind
        // an ACK), a pace and not a segmentation Linux's sender, on the same schedule, never had.
        const t0 = performance.now();
        let n = 0;
        const tick = (): void => {
          const due = Math.min(WRITES, Math.floor((performance.now() - t0) / EVERY_MS) + 1);
          for (; n < due; n++) s.write(BLOCK);
          if (n < WRITES) setTimeout(tick, t0 + n * EVERY_MS - performance.now());
          else s.end();
        };
        tick();
      })
      .listen(PORT);
    const pcap = join(l.dir, 'run.pcapng');
    const cap = await startCapture(l, l.veth, pcap, 128);
    const ip = l.chimneyIps[0]!;
    const ping = await l.sh(`ping -c 2 -i 0.2 -W 2 ${ip} && ping -c 2 -i 0.2 -W 2 ${linuxIp}`, 10_000);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    const reader = (to: string) =>
      l.run(
        ['ip', 'netns', 'exec', l.ns, 'python3', '-c', READER, to, String(PORT), String(READ_PAUSE_S)],
        60_000,
      );

    const r1 = await reader(ip);
    assert.equal(r1.code, 0, r1.stderr);
    read.chimney = r1.stdout.trim();

    const sender = l.spawn([
      'ip',
      'netns',
      'exec',
      ns2,
      'python3',
      '-c',
      SENDER,
      linuxIp,
      String(PORT),
      String(PIECE),
      String(WRITES),
      String(EVERY_MS / 1000),
    ]);
    await new Promise<void>((res, rej) => {
      sender.stdout!.once('data', () => res());
      sender.once('exit', (c) => rej(new Error(`the Linux sender exited (${c}) before it listened`)));
    });
    const r2 = await reader(linuxIp);
    assert.equal(r2.code, 0, r2.stderr);
    read.linux = r2.stdout.trim();
    await cap.stop();

    const rows = await readCapture(l, pcap, `tcp.port == ${PORT}`, [
      'ip.src',
      'ip.dst',
      'tcp.flags.syn',
      'tcp.seq_raw',
      'tcp.ack_raw',
      'tcp.len',
    ]);
    shapes.chimney = shape(rows, ip);
    shapes.linux = shape(rows, linuxIp);
    probes.chimney = chimney!.stack.counters.get('tcp.tlp.probes');
    const ns = await l.run(['ip', 'netns', 'exec', ns2, 'nstat', '-asz', 'TcpExtTCPLossProbes'], 10_000);
    assert.equal(ns.code, 0, ns.stderr);
    probes.linux = Number(/TcpExtTCPLossProbes\s+(\d+)/.exec(ns.stdout)?.[1] ?? Number.NaN);
    for (const who of ['chimney', 'linux'] as const) {
      const v = shapes[who]!;
      console.log(
        `# ${who}: ${v.full} full, ${v.short} short, loss probes ${probes[who]}; ${JSON.stringify(v.second)}`,
      );
    }
  });
  after(async () => {
    chimney?.close();
    if (lab) dropNs2(lab);
    await lab?.down();
  });

  test('everything written arrives intact, from both', () => {
    assert.equal(read.chimney, EXPECTED);
    assert.equal(read.linux, EXPECTED);
  });

  test('Chimney cuts the writes into no more short segments than Linux does, give or take a quarter', () => {
    const [c, k] = [shapes.chimney!, shapes.linux!];
    assert.ok(
      c.short <= 1.25 * k.short + 5,
      `Chimney ${c.full} full and ${c.short} short, Linux ${k.full} and ${k.short}`,
    );
  });

  for (const who of ['linux', 'chimney'] as const) {
    test(`${who}: segments are the MSS with timestamps, and the writes piled up into full ones`, () => {
      const v = shapes[who]!;
      assert.equal(v.mss, 1448);
      assert.ok(v.full > 0, `${v.full} full segments, ${v.short} short`);
    });

    test(`${who}: no short segment while an earlier short one is unacknowledged, but a loss probe’s`, () => {
      // A tail loss probe sends new data whatever Nagle says (tcp_send_loss_probe, TCP_NAGLE_OFF).
      const v = shapes[who]!;
      assert.ok(
        v.second.length <= probes[who],
        `${v.second.length} of ${v.short} short segments: ${v.second.slice(0, 20).join('; ')}`,
      );
    });
  }
});
