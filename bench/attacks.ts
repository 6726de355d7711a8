/**
 * The five attacks of issue 11 on the simulator (virtual time, no root), each run twice in the same
 * process: with Chimney's protection on (the defaults) and with it off, printing the CPU and the
 * heap the victim kept for each, side by side.
 *
 *   zero-window   a peer takes data until its window is zero, then goes silent (netkill, RFC 6429);
 *                 on: the persist timer gives up after maxRetransmits unanswered probes (15);
 *                 off: maxRetransmits unbounded, as before the fix
 *   time-wait     100,000 connections the victim closes first (CHIMNEY_BENCH_TW);
 *                 on: maxTimeWait 65,536 (Linux tcp_max_tw_buckets); off: no cap
 *   stray-ack     200,000 ACKs from random ports to a listener (CHIMNEY_BENCH_ACKS);
 *                 on: cookies are checked only after a recent backlog overflow (Linux);
 *                 off: every stray ACK is checked as a cookie (the listener always "just overflowed")
 *   frag-flood    200,000 IPv4 fragments of 8 bytes that never complete (CHIMNEY_BENCH_FRAGS);
 *                 on: reassembly holds at most 4 MiB; off: 1 GiB
 *   sack          a receiver SACKing alternate bytes of everything in flight, on every segment;
 *                 the scoreboard's cap (SACK_MAX_RANGES) is a constant of sack.ts, so the
 *                 reference here is the same transfer to an honest receiver in the same run
 *
 *   npx tsx bench/attacks.ts [--json]      (or npm run bench -- attacks)
 */
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { SwitchPort } from '../src/link/memory-switch.ts';
import { RawPeer } from '../src/sim/raw-peer.ts';
import { SimNetwork } from '../src/sim/sim-network.ts';
import { Stack } from '../src/stack/stack.ts';
import { parseIpv4, TcpFlag } from '../src/wire/index.ts';

let gcFn: (() => void) | null = null;
/** A full collection, so what is measured is what the victim keeps (exposed on first use only). */
function gc(): void {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
}

export interface AttackCost {
  cpuMs: number;
  /** JS heap the victim still held at the end of the attack (given back when it is closed). */
  heapBytes: number;
  /** What the attack left behind, in the victim's own terms. */
  detail: Record<string, number>;
}

export interface AttackRow {
  attack: string;
  protection: string;
  on: AttackCost;
  off: AttackCost;
}

export interface AttacksResult {
  rows: AttackRow[];
}

interface Scenario {
  /** What is left of the victim to measure; `close` frees it after measurement. */
  detail: Record<string, number>;
  close(): void;
}

/**
 * The JS heap. Data rings live outside it (ArrayBuffers, freed by a background sweep, too late for
 * a reading right after a collection), so each attack counts its victim's buffers itself.
 */
function memory(): number {
  return process.memoryUsage().heapUsed;
}

/** Bytes of send and receive rings the victim's live connections hold. */
function ringBytes(stack: Stack): number {
  let n = 0;
  for (const c of stack.tcp.connections()) {
    n += c.state.delegated.sendBuffer.capacity + c.state.delegated.recvBuffer.capacity;
  }
  return n;
}

/**
 * CPU of the attack, and what the victim holds at its end: the memory a full collection gives back
 * once the scenario is closed and dropped (a difference taken at the end, so garbage of earlier
 * runs cannot blur it).
 */
async function measure(run: () => Promise<Scenario>): Promise<AttackCost> {
  gc();
  const cpu0 = process.cpuUsage();
  let sc: Scenario | null = await run();
  const cpu = process.cpuUsage(cpu0);
  const detail = sc.detail;
  gc();
  const held = memory();
  sc.close();
  sc = null;
  await new Promise((r) => setImmediate(r));
  gc();
  return { cpuMs: Math.round((cpu.user + cpu.system) / 1000), heapBytes: held - memory(), detail };
}

const VICTIM = '10.0.0.1';

/** The attacker: a raw peer on a switch port of its own, its victim's MAC learnt. */
async function attacker(sim: SimNetwork): Promise<RawPeer> {
  const port: SwitchPort = sim.switch.addPort({ name: 'attacker' });
  const atk = new RawPeer(port, 0x02aa00000001, parseIpv4('10.0.0.66'), parseIpv4(VICTIM));
  await atk.resolve((ms) => sim.sleep(ms), 10, 10);
  return atk;
}

// ---------------------------------------------------------------------------------------------
// The attacks.

async function zeroWindow(protect: boolean): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 11, virtualTime: true });
  const victim = sim.addHost({
    ip: `${VICTIM}/24`,
    tcp: { sndBufSize: 1 << 20, maxRetransmits: protect ? 15 : 1e9 },
  });
  const peer = sim.addHost({ ip: '10.0.0.2/24', tcp: { rcvBufSize: 64 << 10 } });
  peer.createServer((s) => s.pause()).listen(80);
  const conns = 200;
  const socks = [];
  for (let i = 0; i < conns; i++) {
    const s = victim.connect(80, '10.0.0.2');
    s.on('error', () => {});
    socks.push(s);
  }
  await Promise.all(socks.map((s) => once(s, 'connect')));
  for (const s of socks) s.write(Buffer.alloc(256 << 10, 1));
  await sim.sleep(2000);
  peer.cut();
  // An hour of silence: Linux's tcp_retries2 gives up after about 15 minutes.
  await sim.sleep(3_600_000);
  const c = victim.stack.counters;
  return {
    detail: {
      connectionsLeft: victim.stack.tcp.size,
      ringKiB: Math.round(ringBytes(victim.stack) / 1024),
      probes: c.get('tcp.persist.probes'),
      aborted: c.get('tcp.persist.timeouts'),
    },
    close: () => sim.close(),
  };
}

async function timeWait(protect: boolean, total: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 12, virtualTime: true });
  // TIME_WAIT lasts longer than the whole run, so every connection the cap admits is still there.
  const victim = sim.addHost({
    ip: `${VICTIM}/24`,
    tcp: { sndBufSize: 16 << 10, rcvBufSize: 16 << 10, timeWaitMs: 3_600_000 },
  });
  if (!protect) victim.stack.tcp.maxTimeWait = Number.POSITIVE_INFINITY;
  const ports = [80, 81, 82, 83, 84];
  for (const p of ports) {
    victim
      .createServer((s) => {
        s.on('error', () => {});
        // Read to the peer's FIN: a stream never read never closes, and its server keeps it.
        s.resume();
        s.end();
      })
      .listen(p);
  }
  // 20 clients × 5 ports, 1,000 connections per pair at 100,000: random ephemeral ports rarely
  // repeat a four-tuple still in TIME_WAIT (which a new SYN would reopen instead).
  const clients = Array.from({ length: 20 }, (_, i) => i + 2).map((h) =>
    sim.addHost({ ip: `10.0.0.${h}/24`, tcp: { sndBufSize: 16 << 10, rcvBufSize: 16 << 10 } }),
  );
  let done = 0;
  const batch = 1000;
  for (let start = 0; start < total; start += batch) {
    const n = Math.min(batch, total - start);
    const closed: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      const k = start + i;
      const s = clients[k % clients.length]!.connect(
        ports[Math.floor(k / clients.length) % ports.length]!,
        VICTIM,
      );
      s.on('error', () => {});
      s.on('end', () => s.end());
      s.resume();
      closed.push(once(s, 'close'));
    }
    await Promise.all(closed);
    done += n;
  }
  // Let the last closes settle, well inside the 60 s of TIME_WAIT.
  await sim.sleep(1000);
  const c = victim.stack.counters;
  return {
    detail: {
      closed: done,
      inTimeWait: victim.stack.tcp.timeWaitCount,
      ringKiB: Math.round(ringBytes(victim.stack) / 1024),
      closedAtOnce: c.get('tcp.time-wait.overflow'),
    },
    close: () => sim.close(),
  };
}

async function strayAcks(protect: boolean, total: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 13, virtualTime: true });
  const victim = sim.addHost({ ip: `${VICTIM}/24` });
  const srv = victim.createServer(() => {}).listen(80);
  const listener = (srv as unknown as { listener: { lastOverflowAt: number } }).listener;
  const atk = await attacker(sim);
  let x = 0x9e3779b9;
  const rnd = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let sent = 0; sent < total; sent += 1000) {
    // Protection off: the listener is always within the cookie window of an overflow.
    if (!protect) listener.lastOverflowAt = sim.now();
    for (let i = 0; i < 1000; i++) {
      atk.sendTcp({
        srcPort: 1024 + (rnd() % 60000),
        dstPort: 80,
        seq: rnd(),
        ack: rnd(),
        flags: TcpFlag.ACK,
      });
    }
    await sim.sleep(1);
  }
  const c = victim.stack.counters;
  return {
    detail: { cookiesChecked: c.get('tcp.syncookies.failed'), connections: victim.stack.tcp.size },
    close: () => sim.close(),
  };
}

async function fragFlood(protect: boolean, total: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 14, virtualTime: true });
  const port = sim.switch.addPort({ name: 'victim' });
  const stack = new Stack({
    clock: sim.clock,
    random: sim.random.fork(),
    name: 'victim',
    reassembly: protect ? {} : { maxBytes: 1 << 30 },
  });
  stack.addInterface(port, { mac: '02:00:00:00:00:01', ip: `${VICTIM}/24`, name: 'eth0' });
  const atk = await attacker(sim);
  // 2,000 datagrams at a time, 100 fragments each from offset 8: fragment zero never comes, so
  // none completes and none draws an ICMP time-exceeded.
  const perDatagram = 100;
  for (let sent = 0, id = 1; sent < total; id += 2000) {
    for (let f = 1; f <= perDatagram && sent < total; f++) {
      for (let d = 0; d < 2000 && sent < total; d++, sent++) atk.sendFragment(id + d, f * 8);
      await sim.sleep(1);
    }
  }
  const c = stack.counters;
  return {
    detail: {
      queued: c.get('accept.ipv4.frag-queued'),
      heldKiB: Math.round(stack.ip.reassembly.heldBytes / 1024),
      dropped: c.get('drop.ipv4.frag-no-memory') + c.get('drop.ipv4.frag-evicted'),
    },
    close: () => {
      stack.close();
      sim.close();
    },
  };
}

async function sackAttack(alternate: boolean, segments: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 15, virtualTime: true });
  const victim = sim.addHost({ ip: `${VICTIM}/24`, tcp: { sndBufSize: 4 << 20 } });
  victim
    .createServer((s) => {
      s.on('error', () => {});
      const chunk = Buffer.alloc(1 << 20, 7);
      const pump = (): void => {
        while (s.write(chunk)) {}
      };
      s.on('drain', pump);
      pump();
    })
    .listen(80);
  const atk = await attacker(sim);
  const iss = 1000;
  let rcvNxt = 0;
  let established = false;
  let seen = 0;
  let highest = 0;
  const ack = (sack?: Array<[number, number]>): void =>
    atk.sendTcp({
      srcPort: 4000,
      dstPort: 80,
      seq: iss + 1,
      ack: rcvNxt,
      flags: TcpFlag.ACK,
      window: 4096,
      sack,
    });
  atk.onTcp = (h, len) => {
    if (h.flags & TcpFlag.SYN) {
      rcvNxt = (h.seq + 1) >>> 0;
      highest = rcvNxt;
      established = true;
      ack();
      return;
    }
    if (len === 0 || seen >= segments) return;
    seen++;
    const end = (h.seq + len) >>> 0;
    if (((end - highest) | 0) > 0) highest = end;
    if (!alternate) {
      // The honest reference: everything in order is acknowledged.
      if (h.seq === rcvNxt) rcvNxt = end;
      ack();
      return;
    }
    // Claim half of what is outstanding in order (so the victim keeps sending at full rate) and
    // SACK four more single bytes, every other byte, of the rest on every ACK: the scoreboard
    // fills with one-byte ranges.
    rcvNxt = (rcvNxt + (((highest - rcvNxt) | 0) >> 1)) >>> 0;
    const span = Math.max(2, ((highest - rcvNxt) | 0) >> 1);
    const blocks: Array<[number, number]> = [];
    for (let b = 0; b < 4; b++) {
      const l = (rcvNxt + 1 + 2 * ((seen * 4 + b) % span)) >>> 0;
      blocks.push([l, (l + 1) >>> 0]);
    }
    ack(blocks);
  };
  atk.sendTcp({
    srcPort: 4000,
    dstPort: 80,
    seq: iss,
    flags: TcpFlag.SYN,
    mss: 1460,
    wscale: 7,
    sackPermitted: true,
  });
  for (let i = 0; i < 600 && seen < segments; i++) await sim.sleep(100);
  if (!established) throw new Error('sack attack: no handshake');
  const c = victim.stack.counters;
  return {
    detail: { segments: seen, retransmits: c.get('tcp.retransmits'), rtos: c.get('tcp.rto') },
    close: () => sim.close(),
  };
}

export async function benchAttacks(): Promise<AttacksResult> {
  const tw = Number(process.env.CHIMNEY_BENCH_TW ?? 100_000);
  const acks = Number(process.env.CHIMNEY_BENCH_ACKS ?? 200_000);
  const frags = Number(process.env.CHIMNEY_BENCH_FRAGS ?? 200_000);
  const rows: AttackRow[] = [];
  const pair = async (attack: string, protection: string, run: (on: boolean) => Promise<Scenario>) => {
    // Each side twice, alternating; the second pair counts, so neither side pays for the JIT.
    await measure(() => run(true));
    await measure(() => run(false));
    const on = await measure(() => run(true));
    const off = await measure(() => run(false));
    rows.push({ attack, protection, on, off });
  };
  await pair(
    'zero-window silent peer, 200 connections × 256 KiB, 1 h',
    'persist gives up after 15 probes',
    zeroWindow,
  );
  await pair(`${tw} connections closed into TIME_WAIT`, 'maxTimeWait 65,536', (on) => timeWait(on, tw));
  await pair('receiver SACKing alternate bytes, 20,000 segments', 'reference: honest receiver', (on) =>
    sackAttack(!on, 20_000),
  );
  await pair(`${frags} 8-byte IPv4 fragments`, 'reassembly capped at 4 MiB', (on) => fragFlood(on, frags));
  await pair(`${acks} stray ACKs to a listener`, 'cookies checked only after an overflow', (on) =>
    strayAcks(on, acks),
  );
  return { rows };
}

const kib = (b: number): string => `${Math.round(b / 1024).toLocaleString('en')} KiB`;

export function formatAttacks(r: AttacksResult): string {
  const lines: string[] = [];
  for (const row of r.rows) {
    const d = (c: AttackCost): string =>
      Object.entries(c.detail)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
    const offName = row.protection.startsWith('reference') ? 'attack' : 'off';
    const onName = row.protection.startsWith('reference') ? 'honest' : 'on';
    lines.push(`${row.attack} (${row.protection}):`);
    lines.push(
      `  ${onName.padEnd(6)} ${String(row.on.cpuMs).padStart(7)} ms CPU, heap ${kib(row.on.heapBytes)}; ${d(row.on)}`,
    );
    lines.push(
      `  ${offName.padEnd(6)} ${String(row.off.cpuMs).padStart(7)} ms CPU, heap ${kib(row.off.heapBytes)}; ${d(row.off)}`,
    );
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchAttacks();
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatAttacks(r));
}
