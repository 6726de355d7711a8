/**
 * Helpers of the accept-at-nic tests: a team of two members whose ports can lose, hold or copy
 * what they receive, a payload whose misplaced bytes show, and an echo client.
 */
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

/** A peer and a team of two members answering the host's listeners' SYNs, their ports `Echoing`. */
export function rig() {
  const net = new SimNetwork({ seed: 23 });
  const peer = net.addHost({ ip: '10.0.0.2/24', name: 'peer', impair: { delayMs: 1 } });
  const ports: Echoing[] = [];
  const host = buildTeamHost(net, {
    ip: '10.0.0.1/24',
    nics: 2,
    policy: { mode: 'manual' },
    wrapPort: (p, i) => (ports[i] = new Echoing(p)),
  });
  host.manager.acceptAtNic = true;
  return { net, peer, host, ports };
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
