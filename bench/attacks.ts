/**
 * The attacks of issue 11 on the simulator (virtual time, no root), each run twice in the same
 * process: with Chimney's protection on (the defaults) and with it off, printing the CPU and the
 * heap the victim kept for each, side by side, and what the attack did to a bystander: an
 * established connection downloading from the victim while the attack runs, next to the same
 * download in the same configuration without the attack.
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
 *                 on: the scoreboard holds at most 512 ranges; off: no cap (sackLimits)
 *   conn-flood    1,000 connections each sending 128 KiB that the victim's application never
 *                 reads (CHIMNEY_BENCH_FLOOD); on: tcpLimits 500 connections, 16 MiB; off: none
 *
 * The bystander downloads 4 MiB (CHIMNEY_BENCH_BYSTANDER) from the victim over a port of 100 Mbit/s
 * and 1 ms each way; its time and longest stall are simulated milliseconds (what the protocol did),
 * its wall time is what it waited behind the attack's CPU in this one-threaded simulation.
 *
 *   npx tsx bench/attacks.ts [--json]      (or npm run bench -- attacks)
 */

import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SeededRandom } from '../src/core/random.ts';
import type { SwitchPort } from '../src/link/memory-switch.ts';
import { RawPeer } from '../src/sim/raw-peer.ts';
import { SimNetwork } from '../src/sim/sim-network.ts';
import { Host } from '../src/socket/host.ts';
import type { TcpSocket } from '../src/socket/tcp-socket.ts';
import { Stack } from '../src/stack/stack.ts';
import { SACK_MAX_RANGES, sackLimits } from '../src/stack/tcp/sack.ts';
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

/** The bystander's download from the victim. */
export interface BystanderResult {
  bytes: number;
  /** Simulated ms from its request to the last byte. */
  simMs: number;
  /** Longest simulated gap between two arrivals of data. */
  maxStallMs: number;
  /** Real ms it took (the simulation runs the attack in the same thread). */
  wallMs: number;
  /** Every byte arrived, in order (SHA-256 of what was sent). */
  intact: boolean;
}

export interface AttackCost {
  cpuMs: number;
  /** JS heap the victim still held at the end of the attack (given back when it is closed). */
  heapBytes: number;
  /** What the attack left behind, in the victim's own terms. */
  detail: Record<string, number>;
  /** The bystander during the attack. */
  bystander: BystanderResult | null;
}

export interface AttackRow {
  attack: string;
  protection: string;
  on: AttackCost;
  off: AttackCost;
  /** The same bystander, same configuration, no attack (protection on / off). */
  quiet: { on: BystanderResult | null; off: BystanderResult | null };
}

export interface AttacksResult {
  rows: AttackRow[];
}

export interface Scenario {
  /** What is left of the victim to measure; `close` frees it after measurement. */
  detail: Record<string, number>;
  bystander: BystanderResult | null;
  close(): void;
}

/** How one run of a scenario goes. */
export interface RunOptions {
  /** Chimney's protection against this attack. */
  protect: boolean;
  /** False: only the bystander runs, for its reference. */
  attack: boolean;
  /** Bytes the bystander downloads (0: no bystander). */
  bystanderBytes: number;
}

const BYSTANDER_PORT = 9000;

/**
 * A connection from a host of its own to the victim, established before the attack; `run` asks
 * for the download, which goes on while the attack does.
 */
export class Bystander {
  private constructor(
    private readonly sim: SimNetwork,
    private readonly sock: TcpSocket,
    private readonly bytes: number,
    private readonly digest: string,
  ) {}

  static async open(
    sim: SimNetwork,
    victim: Host,
    victimIp: string,
    bytes: number,
  ): Promise<Bystander | null> {
    if (bytes <= 0) return null;
    const data = Buffer.from(new SeededRandom(77).fill(new Uint8Array(bytes)));
    const digest = createHash('sha256').update(data).digest('hex');
    victim
      .createServer((s) => {
        s.on('error', () => {});
        s.once('data', () => {
          let off = 0;
          const pump = (): void => {
            while (off < data.length) {
              const ok = s.write(data.subarray(off, off + 65536));
              off += 65536;
              if (!ok) return;
            }
            s.end();
          };
          s.on('drain', pump);
          pump();
        });
        s.resume();
      })
      .listen(BYSTANDER_PORT);
    const friend = sim.addHost({ ip: '10.0.0.200/24', impair: { delayMs: 1, rateBps: 100e6 } });
    const sock = friend.connect(BYSTANDER_PORT, victimIp);
    sock.on('error', () => {});
    await once(sock, 'connect');
    return new Bystander(sim, sock, bytes, digest);
  }

  /** Start the download; the promise settles when it ends (or fails: intact false). */
  run(): Promise<BystanderResult> {
    const sim = this.sim;
    const s = this.sock;
    const t0 = sim.now();
    const w0 = performance.now();
    let last = t0;
    let maxStallMs = 0;
    let got = 0;
    const hash = createHash('sha256');
    return new Promise((resolve) => {
      const done = (ok: boolean): void =>
        resolve({
          bytes: got,
          simMs: sim.now() - t0,
          maxStallMs,
          wallMs: Math.round(performance.now() - w0),
          intact: ok && got === this.bytes && hash.digest('hex') === this.digest,
        });
      s.on('data', (d: Buffer) => {
        const now = sim.now();
        maxStallMs = Math.max(maxStallMs, now - last);
        last = now;
        got += d.length;
        hash.update(d);
      });
      s.once('end', () => done(true));
      s.once('error', () => done(false));
      s.write('go');
    });
  }
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

/** The victim's connections but the bystander's. */
function attackConns(stack: Stack): number {
  let n = 0;
  for (const c of stack.tcp.connections()) if (c.localPort !== BYSTANDER_PORT) n++;
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
  const bystander = sc.bystander;
  gc();
  const held = memory();
  sc.close();
  sc = null;
  await new Promise((r) => setImmediate(r));
  gc();
  return { cpuMs: Math.round((cpu.user + cpu.system) / 1000), heapBytes: held - memory(), detail, bystander };
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

export async function zeroWindow(o: RunOptions, conns = 200): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 11, virtualTime: true });
  const victim = sim.addHost({
    ip: `${VICTIM}/24`,
    tcp: { sndBufSize: 1 << 20, maxRetransmits: o.protect ? 15 : 1e9 },
  });
  const by = await Bystander.open(sim, victim, VICTIM, o.bystanderBytes);
  const peer = sim.addHost({ ip: '10.0.0.2/24', tcp: { rcvBufSize: 64 << 10 } });
  peer.createServer((s) => s.pause()).listen(80);
  const socks = [];
  for (let i = 0; i < (o.attack ? conns : 0); i++) {
    const s = victim.connect(80, '10.0.0.2');
    s.on('error', () => {});
    socks.push(s);
  }
  await Promise.all(socks.map((s) => once(s, 'connect')));
  for (const s of socks) s.write(Buffer.alloc(256 << 10, 1));
  await sim.sleep(2000);
  peer.cut();
  // The victim probes its silent peers meanwhile.
  const bystander = await by?.run();
  // An hour of silence: Linux's tcp_retries2 gives up after about 15 minutes.
  await sim.sleep(3_600_000);
  const c = victim.stack.counters;
  return {
    detail: {
      connectionsLeft: attackConns(victim.stack),
      ringKiB: Math.round(ringBytes(victim.stack) / 1024),
      probes: c.get('tcp.persist.probes'),
      aborted: c.get('tcp.persist.timeouts'),
    },
    bystander: bystander ?? null,
    close: () => sim.close(),
  };
}

export async function timeWait(o: RunOptions, total: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 12, virtualTime: true });
  // TIME_WAIT lasts longer than the whole run, so every connection the cap admits is still there.
  const victim = sim.addHost({
    ip: `${VICTIM}/24`,
    tcp: { sndBufSize: 16 << 10, rcvBufSize: 16 << 10, timeWaitMs: 3_600_000 },
  });
  if (!o.protect) victim.stack.tcp.maxTimeWait = Number.POSITIVE_INFINITY;
  const by = await Bystander.open(sim, victim, VICTIM, o.bystanderBytes);
  const ports = [80, 81, 82, 83, 84];
  for (const p of ports) {
    victim
      .createServer((s) => {
        s.on('error', () => {});
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
  let bystander: Promise<BystanderResult> | undefined;
  for (let start = 0; start < (o.attack ? total : 0); start += batch) {
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
    // Half-way, with tens of thousands waiting, the bystander downloads.
    if (start >= total / 2) bystander ??= by?.run();
    await Promise.all(closed);
    done += n;
  }
  bystander ??= by?.run();
  const result = await bystander;
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
    bystander: result ?? null,
    close: () => sim.close(),
  };
}

/** A deterministic stream of random words for the raw attacker (no allocation per packet). */
function xorshift(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

export async function strayAcks(o: RunOptions, total: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 13, virtualTime: true });
  const victim = sim.addHost({ ip: `${VICTIM}/24` });
  const by = await Bystander.open(sim, victim, VICTIM, o.bystanderBytes);
  const srv = victim.createServer(() => {}).listen(80);
  const listener = (srv as unknown as { listener: { lastOverflowAt: number } }).listener;
  const atk = await attacker(sim);
  const rnd = xorshift(0x9e3779b9);
  const bystander = by?.run();
  for (let sent = 0; sent < (o.attack ? total : 0); sent += 1000) {
    // Protection off: the listener is always within the cookie window of an overflow.
    if (!o.protect) listener.lastOverflowAt = sim.now();
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
  const result = await bystander;
  const c = victim.stack.counters;
  return {
    detail: {
      cookiesChecked: c.get('tcp.syncookies.failed'),
      connections: attackConns(victim.stack),
    },
    bystander: result ?? null,
    close: () => sim.close(),
  };
}

export async function fragFlood(o: RunOptions, total: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 14, virtualTime: true });
  const port = sim.switch.addPort({ name: 'victim' });
  const stack = new Stack({
    clock: sim.clock,
    random: sim.random.fork(),
    name: 'victim',
    reassembly: o.protect ? {} : { maxBytes: 1 << 30 },
  });
  stack.addInterface(port, { mac: '02:00:00:0f:00:01', ip: `${VICTIM}/24`, name: 'eth0' });
  const by = await Bystander.open(sim, new Host(stack), VICTIM, o.bystanderBytes);
  const atk = await attacker(sim);
  const bystander = by?.run();
  // 2,000 datagrams at a time, 100 fragments each from offset 8: fragment zero never comes, so
  // none completes and none draws an ICMP time-exceeded.
  const perDatagram = 100;
  for (let sent = 0, id = 1; sent < (o.attack ? total : 0); id += 2000) {
    for (let f = 1; f <= perDatagram && sent < total; f++) {
      for (let d = 0; d < 2000 && sent < total; d++, sent++) atk.sendFragment(id + d, f * 8);
      await sim.sleep(1);
    }
  }
  const result = await bystander;
  const c = stack.counters;
  return {
    detail: {
      queued: c.get('accept.ipv4.frag-queued'),
      heldKiB: Math.round(stack.ip.reassembly.heldBytes / 1024),
      dropped: c.get('drop.ipv4.frag-no-memory') + c.get('drop.ipv4.frag-evicted'),
    },
    bystander: result ?? null,
    close: () => {
      stack.close();
      sim.close();
    },
  };
}

export async function sackAttack(o: RunOptions, segments: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 15, virtualTime: true });
  const victim = sim.addHost({ ip: `${VICTIM}/24`, tcp: { sndBufSize: 4 << 20 } });
  const by = await Bystander.open(sim, victim, VICTIM, o.bystanderBytes);
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
  let ranges = 0;
  let first = 0;
  const victimIp = parseIpv4(VICTIM);
  const ack = (sack?: Array<[number, number]>): void =>
    atk.sendTcp({
      srcPort: 4000,
      dstPort: 80,
      seq: iss + 1,
      ack: rcvNxt,
      flags: TcpFlag.ACK,
      window: 8192,
      sack,
    });
  atk.onTcp = (h, len) => {
    if (h.flags & TcpFlag.SYN) {
      rcvNxt = (h.seq + 1) >>> 0;
      highest = rcvNxt;
      first = rcvNxt;
      established = true;
      ack();
      return;
    }
    if (len === 0 || seen >= segments) return;
    seen++;
    const conn = victim.stack.tcp.lookup(victimIp, 80, atk.ip, 4000);
    if (conn) ranges = Math.max(ranges, conn.state.soft.sacked.length);
    const end = (h.seq + len) >>> 0;
    if (((end - highest) | 0) > 0) highest = end;
    // Acknowledge in order only up to a trail below the highest byte received (half of what came,
    // at most 384 KiB), so the
    // victim keeps sending at the ACK clock's rate, and SACK four single bytes, every other byte,
    // of the newest 16 KiB on every ACK: each island lives until the trail passes it, hundreds of
    // ACKs later, so the scoreboard holds about a thousand one-byte ranges without its cap.
    // What this makes the victim do: keep at most SACK_MAX_RANGES islands, each ACK walking that
    // many and the RACK log's bounded entries at most. What it cannot: grow either past its cap,
    // or have RACK (and its reordering timer) declare the data between the islands lost: a block
    // shorter than a segment dates no delivery (whole segments only, as Linux's
    // tcp_match_skb_to_sack), so the victim neither resends those gaps nor cuts its window. A
    // receiver that SACKs whole segments above gaps would have the gaps resent, rightly, within
    // the congestion window the recovery cut, and would have to acknowledge them to go on.
    const trail = Math.min(384 << 10, ((highest - first) | 0) >> 1);
    if (((highest - rcvNxt) | 0) > trail) rcvNxt = (highest - trail) >>> 0;
    const blocks: Array<[number, number]> = [];
    for (let b = 0; b < 4; b++) {
      const l = (highest - 2 - 2 * ((seen * 4 + b) % 8192)) >>> 0;
      if (((l - rcvNxt) | 0) > 0) blocks.push([l, (l + 1) >>> 0]);
    }
    ack(blocks);
  };
  // Protection off: the scoreboard keeps every island (the switch is process-wide; put back below).
  sackLimits.maxRanges = o.protect ? SACK_MAX_RANGES : Number.POSITIVE_INFINITY;
  try {
    const bystander = by?.run();
    if (o.attack) {
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
    }
    const result = await bystander;
    const c = victim.stack.counters;
    return {
      detail: {
        segments: seen,
        mostRanges: ranges,
        retransmits: c.get('tcp.retransmits'),
        rtos: c.get('tcp.rto'),
      },
      bystander: result ?? null,
      close: () => sim.close(),
    };
  } finally {
    sackLimits.maxRanges = SACK_MAX_RANGES;
  }
}

/** The limits of tcp-mem.ts against a flood of connections that fill buffers nobody reads. */
export async function connFlood(o: RunOptions, conns: number): Promise<Scenario> {
  const sim = new SimNetwork({ seed: 16, virtualTime: true });
  const off = Number.POSITIVE_INFINITY;
  const victim = sim.addHost({
    ip: `${VICTIM}/24`,
    tcpLimits: o.protect
      ? { maxConnections: 500, memBytes: 16 << 20 }
      : { maxConnections: off, memBytes: off },
  });
  const by = await Bystander.open(sim, victim, VICTIM, o.bystanderBytes);
  victim
    .createServer((s) => {
      s.on('error', () => {});
      s.pause();
    })
    .listen(80);
  const atk = sim.addHost({ ip: '10.0.0.66/24', tcp: { maxSynRetransmits: 2 } });
  await atk.ping(VICTIM);
  const tcp = victim.stack.tcp;
  let mostConns = 0;
  let mostBytes = 0;
  const sample = (): void => {
    mostConns = Math.max(mostConns, tcp.liveCount);
    mostBytes = Math.max(mostBytes, tcp.budget.used);
  };
  // 50 connects every 10 ms; the bystander starts half-way.
  let bystander: Promise<BystanderResult> | undefined;
  for (let i = 0; i < (o.attack ? conns : 0); i += 50) {
    for (let k = 0; k < 50; k++) {
      const s = atk.connect(80, VICTIM);
      s.on('error', () => {});
      s.on('connect', () => s.write(Buffer.alloc(128 << 10, 1)));
    }
    if (i >= conns / 2) bystander ??= by?.run();
    await sim.sleep(10);
    sample();
  }
  bystander ??= by?.run();
  let result: BystanderResult | undefined;
  void bystander?.then((r) => {
    result = r;
  });
  while (bystander && result === undefined) {
    await sim.sleep(10);
    sample();
  }
  await sim.sleep(2000);
  sample();
  const c = victim.stack.counters;
  return {
    detail: {
      mostConnections: mostConns,
      mostKiB: Math.round(mostBytes / 1024),
      refused: c.get('tcp.conn.limit') + c.get('tcp.mem.limit'),
      shrunk: c.get('tcp.mem.shrunk'),
    },
    bystander: result ?? null,
    close: () => sim.close(),
  };
}

export async function benchAttacks(): Promise<AttacksResult> {
  const tw = Number(process.env.CHIMNEY_BENCH_TW ?? 100_000);
  const acks = Number(process.env.CHIMNEY_BENCH_ACKS ?? 200_000);
  const frags = Number(process.env.CHIMNEY_BENCH_FRAGS ?? 200_000);
  const flood = Number(process.env.CHIMNEY_BENCH_FLOOD ?? 1000);
  const bystanderBytes = Number(process.env.CHIMNEY_BENCH_BYSTANDER ?? 4 << 20);
  const rows: AttackRow[] = [];
  const pair = async (
    attack: string,
    protection: string,
    run: (o: RunOptions) => Promise<Scenario>,
  ): Promise<void> => {
    const go = (protect: boolean) => () => run({ protect, attack: true, bystanderBytes });
    // Each side twice, alternating; the second pair counts, so neither side pays for the JIT.
    await measure(go(true));
    await measure(go(false));
    const on = await measure(go(true));
    const off = await measure(go(false));
    const quiet = async (protect: boolean): Promise<BystanderResult | null> => {
      const sc = await run({ protect, attack: false, bystanderBytes });
      sc.close();
      return sc.bystander;
    };
    rows.push({ attack, protection, on, off, quiet: { on: await quiet(true), off: await quiet(false) } });
  };
  await pair(
    'zero-window silent peer, 200 connections × 256 KiB, 1 h',
    'persist gives up after 15 probes',
    zeroWindow,
  );
  await pair(`${tw} connections closed into TIME_WAIT`, 'maxTimeWait 65,536', (o) => timeWait(o, tw));
  await pair('receiver SACKing alternate bytes, 20,000 segments', 'scoreboard capped at 512 ranges', (o) =>
    sackAttack(o, 20_000),
  );
  await pair(`${frags} 8-byte IPv4 fragments`, 'reassembly capped at 4 MiB', (o) => fragFlood(o, frags));
  await pair(`${acks} stray ACKs to a listener`, 'cookies checked only after an overflow', (o) =>
    strayAcks(o, acks),
  );
  await pair(`${flood} connections × 128 KiB never read`, 'tcpLimits 500 connections, 16 MiB', (o) =>
    connFlood(o, flood),
  );
  return { rows };
}

const kib = (b: number): string => `${Math.round(b / 1024).toLocaleString('en')} KiB`;

/** "4.0 MiB in 352 ms (95 Mbit/s), longest stall 3 ms, wall 210 ms". */
function formatBystander(b: BystanderResult | null): string {
  if (!b) return 'no bystander';
  if (!b.intact) return `bystander FAILED (${b.bytes} bytes, ${b.simMs} ms)`;
  const mbps = b.simMs > 0 ? ((b.bytes * 8) / (b.simMs * 1000)).toFixed(0) : '∞';
  const ms = (x: number): string => x.toFixed(x < 10 ? 1 : 0);
  return `bystander ${ms(b.simMs)} ms (${mbps} Mbit/s), longest stall ${ms(b.maxStallMs)} ms, wall ${b.wallMs} ms`;
}

export function formatAttacks(r: AttacksResult): string {
  const lines: string[] = [];
  for (const row of r.rows) {
    const d = (c: AttackCost): string =>
      Object.entries(c.detail)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
    lines.push(`${row.attack} (${row.protection}):`);
    for (const [name, c, quiet] of [
      ['on', row.on, row.quiet.on],
      ['off', row.off, row.quiet.off],
    ] as const) {
      lines.push(
        `  ${name.padEnd(4)} ${String(c.cpuMs).padStart(7)} ms CPU, heap ${kib(c.heapBytes)}; ${d(c)}`,
      );
      lines.push(`         during: ${formatBystander(c.bystander)}`);
      lines.push(`         quiet:  ${formatBystander(quiet)}`);
    }
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchAttacks();
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatAttacks(r));
}
