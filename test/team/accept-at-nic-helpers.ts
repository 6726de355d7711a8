/**
 * Helpers of the accept-at-nic tests: a team of two members whose ports can lose, hold or copy
 * what they receive, a payload whose misplaced bytes show, and an echo client.
 */
import { SeededRandom } from '../../src/core/random.ts';
import type { RxOffloadInfo } from '../../src/link/link.ts';
import { LinkWrapper } from '../../src/link/link-wrapper.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { buildTeamHost } from '../../src/team/team-host.ts';

/** A member's port that also hands what it receives to `also` (another member, as a switch might). */
export class Echoing extends LinkWrapper {
  handler: ((frame: Uint8Array, info?: RxOffloadInfo) => void) | null = null;
  also: ((frame: Uint8Array) => void) | null = null;
  /** Frames it loses instead of handing them on (true: lost). */
  drop: ((frame: Uint8Array) => boolean) | null = null;
  override onFrame(h: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.handler = h;
    super.onFrame((frame, info) => {
      if (this.drop?.(frame) === true) return;
      h(frame, info);
      this.also?.(frame);
    });
  }
}

export const TEAM_IP6 = 'fd00::1';
export const PEER_IP6 = 'fd00::2';

/**
 * A peer and a team of two members answering the host's listeners' SYNs, their ports `Echoing`.
 * `ip6`: both ends have IPv6 addresses too (TEAM_IP6, PEER_IP6), and the host and its members
 * one ISN secret.
 */
export function rig(ip6 = false) {
  const net = new SimNetwork({ seed: 23 });
  const peer = net.addHost({
    ip: '10.0.0.2/24',
    name: 'peer',
    impair: { delayMs: 1 },
    ...(ip6 ? { ip6: `${PEER_IP6}/64` } : {}),
  });
  const ports: Echoing[] = [];
  const host = buildTeamHost(net, {
    ip: '10.0.0.1/24',
    nics: 2,
    policy: { mode: 'manual' },
    wrapPort: (p, i) => (ports[i] = new Echoing(p)),
    ...(ip6 ? { ip6: [`${TEAM_IP6}/64`], isnSecret: new SeededRandom(23).fill(new Uint8Array(16)) } : {}),
  });
  host.manager.acceptAtNic = true;
  return { net, peer, host, ports };
}

/**
 * The rig with a server on port 80 whose backlog of one makes the host answer with SYN cookies
 * once a connection is half-open, keeping what it accepts, and the peer's neighbour entry made.
 */
export async function cookieRig() {
  const r = rig();
  const accepted: TcpSocket[] = [];
  r.host
    .createServer((s: TcpSocket) => {
      accepted.push(s);
      s.on('error', () => {});
    })
    .listen({ port: 80, backlog: 1 });
  await r.peer.ping('10.0.0.1');
  return { ...r, accepted };
}

/** Bytes 0..n-1 of a pattern a misplaced or repeated segment would show. */
export function pattern(n: number, salt: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + salt + (i >> 11)) & 0xff;
  return b;
}

type Client = Pick<TcpSocket, 'on' | 'write'>;

/** Send `out` on `c`: `done` once as many bytes came back, `got()` what did, `n()` how many so far. */
export function echo(c: Client, out: Buffer) {
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve) => {
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= out.length) resolve();
    });
  });
  c.on('error', () => {});
  c.write(out);
  return { done, got: () => Buffer.concat(got), n: () => n };
}

/** A frame a member's port held back, the member it came to, and its TCP flags. */
export interface HeldFrame {
  i: number;
  f: Uint8Array;
  flags: number;
}

/**
 * Connect from `peer` to port 80 while both members' ports hold back every frame of the new
 * connection, until its SYN has been sent twice (the peer's resend). `handOn` gives a held frame
 * to its member; `release` stops the holding.
 */
export async function heldConnect(r: ReturnType<typeof rig>) {
  const { net, peer, ports } = r;
  let port = -1;
  const held: HeldFrame[] = [];
  for (let i = 0; i < ports.length; i++)
    ports[i]!.drop = (f) => {
      if (f.length < 54 || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 6) return false;
      const l4 = 14 + (f[14]! & 0x0f) * 4;
      if (((f[l4]! << 8) | f[l4 + 1]!) !== port) return false;
      held.push({ i, f: f.slice(), flags: f[l4 + 13]! });
      return true;
    };
  const x = peer.connect(80, '10.0.0.1');
  const out = {
    x,
    held,
    /** What the peer's connection failed with (null: nothing). */
    err: null as Error | null,
    handOn: (h: HeldFrame) => ports[h.i]!.handler!(h.f),
    release: () => {
      port = -2;
    },
  };
  x.on('error', (e) => {
    out.err = e;
  });
  await net.sleep(0);
  port = x.localPort!;
  while (held.filter((h) => h.flags === 2).length < 2) await net.sleep(50);
  return out;
}
