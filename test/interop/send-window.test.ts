/**
 * Chimney's sender against a Linux reader with a small receive buffer, pinned to Linux's rules for
 * a small window (issue 10): a Python client with SO_RCVBUF of 4 KB (set once connected, so the
 * window scale comes from the default limits and windows are not rounded to the MSS) reads a download from a
 * Chimney server on a TAP in bounded steps with pauses, so the window it offers opens a little at
 * a time. The body must arrive intact, and a capture on the lab's veth (offloads off: the kernel
 * has cut Chimney's TSO super-frames into wire segments before the capture point) must show no
 * new-data segment shorter than the MSS but those Linux's sender also sends:
 * - the last segment of the body;
 * - a window probe (tcp_write_wakeup): nothing in flight and a window smaller than an MSS, sent by
 *   the probe timer, so no more of them than `tcp.persist.window-probes` counted;
 * - the tail of a piece that ends at the right edge of a window the reader offered
 *   (tcp_mss_split_point), while no other short segment is unacknowledged (Minshall's Nagle).
 *
 * The capture sees the reader's ACKs before Chimney does, so each check errs on Chimney's side: an
 * edge any ACK so far offered counts, and a short segment counts as unacknowledged only while no
 * ACK in the capture covers it (Chimney, which has seen no more ACKs, also held it unacknowledged).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readCapture, startCapture } from '../helpers/tshark.ts';
import { type InProc, startInProc, writePattern } from './inproc.ts';
import { interopGate, type Lab, makeLab, patternDigest } from './lab.ts';

const gate = interopGate(['tshark', 'ethtool', 'python3']);
const PORT = 9;
/** Not a multiple of the MSS: the last segment of the body is short. */
const BODY = 400_000;

/**
 * Shrink the receive buffer to `rcvbuf` once connected, read in steps of `step` bytes with a pause
 * after each; print the length and SHA-256.
 */
const SLOW_READER = `
import hashlib, socket, sys, time
ip, port, rcvbuf, step, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
s = socket.socket()
s.settimeout(60)
s.connect((ip, port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
h = hashlib.sha256()
got = 0
while True:
    d = s.recv(step)
    if not d:
        break
    h.update(d)
    got += len(d)
    time.sleep(pause)
print(got, h.hexdigest())
`;

interface Seg {
  fromChimney: boolean;
  syn: boolean;
  seq: number;
  ack: number;
  len: number;
  win: number;
  wscale: number;
}

interface Verdict {
  mss: number;
  newData: number;
  /** Segments that begin below the highest sequence sent and end beyond it. */
  resent: number;
  last: number;
  probes: number;
  tails: number;
  bad: string[];
}

const u32 = (x: number) => x >>> 0;
/** a - b modulo 2^32, as a signed distance. */
const diff = (a: number, b: number) => u32(a - b) | 0;

/** Classify every new-data segment Chimney sent that is shorter than the MSS. */
function judge(segs: readonly Seg[], mss: number): Verdict {
  const v: Verdict = { mss, newData: 0, resent: 0, last: 0, probes: 0, tails: 0, bad: [] };
  const synAck = segs.find((s) => s.syn && s.fromChimney);
  const syn = segs.find((s) => s.syn && !s.fromChimney);
  assert.ok(syn && synAck, 'the handshake is in the capture');
  const shift = syn.wscale;
  const bodyEnd = u32(synAck.seq + 1 + BODY);
  let high = u32(synAck.seq + 1);
  let acked = high;
  /** Right edges the reader offered so far; and those offered with the ACK at `acked`. */
  const edges = new Set<number>();
  let edgesAtAck: number[] = [];
  /** End of the last short new-data segment (Minshall's snd_sml), -1 none. */
  let smallEnd = -1;
  for (const s of segs) {
    if (s.syn) continue;
    if (!s.fromChimney) {
      const edge = u32(s.ack + s.win * 2 ** shift);
      if (diff(s.ack, acked) > 0) {
        acked = s.ack;
        edgesAtAck = [];
      }
      if (s.ack === acked) edgesAtAck.push(edge);
      edges.add(edge);
      continue;
    }
    const end = u32(s.seq + s.len);
    if (s.len === 0 || diff(end, high) <= 0) continue;
    const seq = s.seq;
    const fresh = diff(seq, high) >= 0;
    high = end;
    // A resend that runs on into new data (after the reader pruned what it had taken in) goes
    // by the retransmission rules: whatever the window holds.
    if (!fresh) {
      v.resent++;
      continue;
    }
    v.newData++;
    if (s.len >= mss) continue;
    const at = `seq +${u32(seq - synAck.seq - 1)} len ${s.len}`;
    if (end === bodyEnd) {
      v.last++;
    } else if (seq === acked && edgesAtAck.some((e) => diff(e, seq) < mss)) {
      v.probes++;
    } else if (edges.has(end)) {
      if (smallEnd !== -1 && diff(smallEnd, acked) > 0)
        v.bad.push(
          `${at}: a tail at the window edge while the short segment ending +${u32(smallEnd - synAck.seq - 1)} is unacknowledged`,
        );
      else v.tails++;
    } else {
      v.bad.push(`${at}: neither the last, a probe into a window under an MSS, nor a tail at a window edge`);
    }
    smallEnd = end;
  }
  return v;
}

let lab: Lab | null = null;
let chimney: InProc | null = null;
let reader = '';
let verdict: Verdict | null = null;
let windowProbes = 0;

describe('Chimney sending into a slow Linux reader’s small window', {
  skip: gate.skip,
  timeout: 180_000,
}, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'swnd', subnet: 23, offloads: false }, gate.reason);
    chimney = startInProc(lab!, 0, { offload: true });
    chimney.host
      .createServer((s) => {
        s.on('error', () => {});
        void writePattern(s, BODY);
      })
      .listen(PORT);
    const pcap = join(lab!.dir, 'run.pcapng');
    const cap = await startCapture(lab!, lab!.veth, pcap, 128);
    const ip = lab!.chimneyIps[0]!;
    // Linux's default buffer limits: the window scale is negotiated from them (the reader's
    // buffer shrinks only after the handshake), so its windows, in units of 2^scale bytes, end
    // between our segments' boundaries. With SO_RCVBUF set before connect the scale is 0 and
    // Linux rounds every window to a multiple of the MSS: no short piece is ever due.
    const sc = await lab!.sh(`sysctl -qw net.ipv4.tcp_rmem='4096 131072 6291456'`, 10_000);
    assert.equal(sc.code, 0, sc.stderr);
    // ARP resolved, and tshark has begun writing (it says so a moment before it does).
    const ping = await lab!.sh(`ping -c 2 -i 0.2 -W 2 ${ip}`, 10_000);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    const r = await lab!.run(
      [
        'ip',
        'netns',
        'exec',
        lab!.ns,
        'python3',
        '-c',
        SLOW_READER,
        ip,
        String(PORT),
        '4096',
        '1000',
        '0.002',
      ],
      90_000,
    );
    await cap.stop();
    assert.equal(r.code, 0, r.stderr);
    reader = r.stdout.trim();
    windowProbes = chimney.stack.counters.get('tcp.persist.window-probes');
    const rows = await readCapture(lab!, pcap, `tcp.port == ${PORT}`, [
      'ip.src',
      'tcp.flags.syn',
      'tcp.seq_raw',
      'tcp.ack_raw',
      'tcp.len',
      'tcp.window_size_value',
      'tcp.options.wscale.shift',
    ]);
    const segs = rows.map((row): Seg => {
      const [src, syn, seq, ack, len, win, ws] = row.split('|');
      return {
        fromChimney: src === ip,
        syn: syn === '1' || syn === 'True',
        seq: Number(seq),
        ack: Number(ack),
        len: Number(len),
        win: Number(win),
        wscale: ws === '' || ws === undefined ? 0 : Number(ws),
      };
    });
    const mss = Math.max(...segs.filter((s) => s.fromChimney).map((s) => s.len));
    verdict = judge(segs, mss);
    console.log(`# reader: ${reader}; window probes counted: ${windowProbes}; ${JSON.stringify(verdict)}`);
  });
  after(async () => {
    chimney?.close();
    await lab?.down();
  });

  test('the body arrives intact', () => {
    assert.equal(reader, `${BODY} ${patternDigest(BODY)}`);
  });

  test('segments are the MSS with timestamps (1448), and the reader’s windows ended between their boundaries', () => {
    const v = verdict!;
    assert.equal(v.mss, 1448);
    assert.ok(v.newData >= BODY / v.mss, `${v.newData} new-data segments`);
    // Else no short piece was ever due, and the rules below check nothing.
    assert.ok(v.tails + v.probes > 0, 'short pieces at window edges or probes');
  });

  test('no short new-data segment but the last, a window probe, or a tail at the window edge with no other short one unacknowledged', () => {
    const v = verdict!;
    assert.deepEqual(v.bad.slice(0, 20), [], `${v.bad.length} short segments against the rules`);
  });

  test('no more probes into a window under an MSS than the probe timer sent', () => {
    assert.ok(
      verdict!.probes <= windowProbes,
      `${verdict!.probes} probe-like segments, ${windowProbes} counted`,
    );
  });
});
