import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import type { Stack } from '../stack/stack.ts';
import type { ConnectionHandle } from '../stack/tcp/tcp-types.ts';
import { TCP_STATE_NAMES } from '../state/tcp-state.ts';
import { formatIpv4, formatMac } from '../wire/addr.ts';
import {
  type ConnStatus,
  DEFAULT_CONTROL_PATH,
  formatStatus,
  type NeighborStatus,
  type NicStatus,
  queryStatus,
  type StatusSnapshot,
} from './control.ts';

/** Where a connection runs, for the status tree; the host stack unless an offload layer says otherwise. */
export type OwnerOf = (localIp: number, localPort: number, remoteIp: number, remotePort: number) => string;

/**
 * Builds status snapshots of a running stack. Rates are the byte deltas since the previous
 * snapshot, so a `chimney status` every second shows live rates.
 */
export class StatusReporter {
  private readonly started = Date.now();
  private last = new Map<string, { at: number; in: number; out: number }>();

  constructor(
    private readonly stack: Stack,
    private readonly name: string,
    private readonly extra: {
      ownerOf?: OwnerOf;
      nics?: () => NicStatus[];
      listeners?: () => string[];
      failovers?: () => unknown[];
    } = {},
  ) {}

  snapshot(): StatusSnapshot {
    const now = Date.now();
    const next = new Map<string, { at: number; in: number; out: number }>();
    const byNeighbor = new Map<string, NeighborStatus>();
    for (const conn of this.stack.tcp.connections()) {
      const s = conn.state;
      const nb = s.path.neighbor;
      const nbKey = formatIpv4(nb.const.ip);
      let tree = byNeighbor.get(nbKey);
      if (!tree) {
        tree = {
          ip: nbKey,
          mac: nb.cached.dstMac >= 0 ? formatMac(nb.cached.dstMac) : 'unresolved',
          paths: [],
        };
        byNeighbor.set(nbKey, tree);
      }
      const remote = formatIpv4(s.path.const.remoteIp);
      let path = tree.paths.find((p) => p.remote === remote);
      if (!path) {
        path = { remote, mtu: s.path.cached.mtu, conns: [] };
        tree.paths.push(path);
      }
      const c = s.const;
      const key = `${c.localIp}:${c.localPort}>${c.remoteIp}:${c.remotePort}`;
      const prev = this.last.get(key);
      const dt = prev ? (now - prev.at) / 1000 : 0;
      const st = conn.stats;
      next.set(key, { at: now, in: st.bytesIn, out: st.bytesOut });
      const status: ConnStatus = {
        local: `${formatIpv4(c.localIp)}:${c.localPort}`,
        remote: `${remote}:${c.remotePort}`,
        owner: this.extra.ownerOf?.(c.localIp, c.localPort, c.remoteIp, c.remotePort) ?? 'host',
        state: TCP_STATE_NAMES[s.delegated.state] ?? String(s.delegated.state),
        bytesIn: st.bytesIn,
        bytesOut: st.bytesOut,
        rateIn: prev && dt > 0 ? (st.bytesIn - prev.in) / dt : 0,
        rateOut: prev && dt > 0 ? (st.bytesOut - prev.out) / dt : 0,
        retransmits: st.retransmits,
      };
      path.conns.push(status);
    }
    this.last = next;
    const addresses = this.stack.interfaces.flatMap((i) =>
      i.addresses.map((a) => `${formatIpv4(a.ip)}/${a.prefixLength}`),
    );
    const counters = Object.fromEntries(
      Object.entries(this.stack.counters.snapshot()).filter(
        ([k]) => k.startsWith('tcp.') || k.startsWith('drop.'),
      ),
    );
    return {
      name: this.name,
      addresses,
      uptimeMs: now - this.started,
      nics: this.extra.nics?.() ?? [],
      trees: [...byNeighbor.values()],
      listeners: this.extra.listeners?.() ?? [],
      counters,
      failovers: this.extra.failovers?.() ?? [],
    };
  }
}

/** Handle of a connection, for callers that only need to name it. */
export type AnyConnection = ConnectionHandle;

export const CONTROL_DIR = dirname(DEFAULT_CONTROL_PATH);

/** The control socket of the one server running here; a clear error for none or several. */
function findControlSocket(): string {
  let names: string[] = [];
  try {
    names = readdirSync(CONTROL_DIR).filter((n) => n.endsWith('.sock'));
  } catch {
    // no directory: no server has run here
  }
  if (names.length === 1) return join(CONTROL_DIR, names[0]!);
  if (names.length === 0)
    throw new Error(`no chimney serve is running (nothing in ${CONTROL_DIR}); start one first`);
  throw new Error(
    `several servers are running; pick one with --control: ${names.map((n) => join(CONTROL_DIR, n)).join(', ')}`,
  );
}

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      'show the state trees of a running `chimney serve`: neighbors, paths, connections and their owners',
    )
    .option('--control <path>', `control socket of the server (default: the only one in ${CONTROL_DIR})`)
    .option('--json', 'print the snapshot as one JSON object')
    .action(async (o: { control?: string; json?: boolean }) => {
      try {
        const s = await queryStatus(o.control ?? findControlSocket());
        process.stdout.write(o.json ? `${JSON.stringify(s)}\n` : `${formatStatus(s)}\n`);
      } catch (e) {
        process.stderr.write(`chimney status: ${(e as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
