/**
 * A Chimney stack inside the test process on one of the lab's TAPs, optionally behind
 * impairLink: for scenarios the CLI cannot set up (loss and reordering made in Chimney's own
 * link), and to read Chimney's counters directly.
 */
import { createHash } from 'node:crypto';
import { RealClock } from '../../src/core/clock.ts';
import { CryptoRandom, SeededRandom } from '../../src/core/random.ts';
import { impairLink } from '../../src/link/impaired-link.ts';
import type { ImpairmentSpec } from '../../src/link/impairment.ts';
import type { Link } from '../../src/link/link.ts';
import { TapLink } from '../../src/link/tap-link.ts';
import { Host } from '../../src/socket/host.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { Stack } from '../../src/stack/stack.ts';
import type { Lab } from './lab.ts';

export interface InProc {
  host: Host;
  stack: Stack;
  link: Link;
  tap: TapLink;
  close(): void;
}

/**
 * Chimney on the lab's TAP `tapIdx` with address chimneyIps[tapIdx]. By default the TAP is opened
 * without the virtio-net header, so every frame is one wire frame: each loss is one lost segment.
 * `offload: true` opens it with checksum offload and TSO, as `chimney serve` does.
 */
export function startInProc(
  lab: Lab,
  tapIdx: number,
  o: { impair?: ImpairmentSpec; seed?: number; offload?: boolean } = {},
): InProc {
  const clock = new RealClock();
  const tap = TapLink.open({ name: lab.taps[tapIdx]!, create: false, vnetHdr: o.offload ?? false, clock });
  let link: Link = tap;
  if (o.impair) link = impairLink(tap, o.impair, clock, new SeededRandom(o.seed ?? 1));
  const stack = new Stack({ clock, random: new CryptoRandom(), name: `inproc-${lab.tag}` });
  stack.addInterface(link, { mac: lab.mac(tapIdx), ip: `${lab.chimneyIps[tapIdx]}/24` });
  const host = new Host(stack);
  let closed = false;
  return {
    host,
    stack,
    link,
    tap,
    close: () => {
      if (closed) return;
      closed = true;
      stack.close();
      link.close();
    },
  };
}

/** Byte i of the /bytes pattern is i mod 251; `write` streams n of them with backpressure. */
export async function writePattern(sock: TcpSocket, n: number): Promise<void> {
  const block = Buffer.alloc(251 * 256);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  let sent = 0;
  while (sent < n) {
    const k = Math.min(block.length, n - sent);
    if (!sock.write(block.subarray(0, k))) await new Promise((r) => sock.once('drain', r));
    sent += k;
  }
  await new Promise<void>((r) => sock.end(r));
}

/** SHA-256 and length of everything `sock` yields until its end. */
export function digestOf(sock: TcpSocket): Promise<{ sha: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    sock.on('data', (d: Uint8Array) => {
      h.update(d);
      bytes += d.length;
    });
    sock.on('end', () => resolve({ sha: h.digest('hex'), bytes }));
    sock.on('error', reject);
  });
}
