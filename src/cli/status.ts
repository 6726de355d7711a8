import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { QueryResult } from '../nic/nic.ts';
import { isV6 } from '../stack/address-table.ts';
import type { Stack } from '../stack/stack.ts';
import type { ConnectionHandle } from '../stack/tcp/tcp-types.ts';
import { TCP_STATE_NAMES } from '../state/tcp-state.ts';
import { formatIpv4, formatIpv6, formatMac } from '../wire/addr.ts';
import { formatEndpoint } from './addresses.ts';
import {
  type ControlRequest,
  controlRequest,
  DEFAULT_CONTROL_PATH,
  type FailoverStatus,
  formatStatus,
  type NeighborStatus,
  type NicStatus,
  type PathStatus,
  queryStatus,
  type StatusSnapshot,
} from './control.ts';
import { intIn } from './options.ts';
import { watchStatus } from './status-watch.ts';

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
      failovers?: () => FailoverStatus[];
      /** What each NIC runs: the host stack no longer holds offloaded connections. */
      offloaded?: () => Promise<{ owner: string; conns: QueryResult[] }[]>;
    } = {},
  ) {}

  /** Either family's text form (IPv6 addresses are handles into the stack's address table). */
  private fmt(ip: number): string {
    return this.stack.addrs.format(ip);
  }

  /**
   * The next hop a path's neighbor stands for. An IPv6 neighbor state does not carry its address
   * (its const.ip is 0), so the route to the remote names it.
   */
  private neighborName(nbIp: number, remoteIp: number, ifIndex: number): string {
    if (!isV6(remoteIp)) return formatIpv4(nbIp);
    const iface = this.stack.interfaces[ifIndex];
    const r = this.stack.ip6.route(this.stack.addrs.bytes(remoteIp), iface);
    return r ? formatIpv6(r.nextHop) : this.fmt(remoteIp);
  }

  async snapshot(): Promise<StatusSnapshot> {
    const offloaded = (await this.extra.offloaded?.()) ?? [];
    const now = Date.now();
    const next = new Map<string, { at: number; in: number; out: number }>();
    const endpoint = (ip: number, port: number): string => formatEndpoint(this.stack.addrs, ip, port);
    const byNeighbor = new Map<string, NeighborStatus>();
    const pathOf = (nbIp: string, nbMac: string, remote: string, mtu: number): PathStatus => {
      let tree = byNeighbor.get(nbIp);
      if (!tree) {
        tree = { ip: nbIp, mac: nbMac, paths: [] };
        byNeighbor.set(nbIp, tree);
      }
      let path = tree.paths.find((p) => p.remote === remote);
      if (!path) {
        path = { remote, mtu, conns: [] };
        tree.paths.push(path);
      }
      return path;
    };
    const add = (
      path: PathStatus,
      k: { localIp: number; localPort: number; remoteIp: number; remotePort: number },
      owner: string,
      state: number,
      // The host's conn.stats or a NIC's query row: the same counts, since the connection began.
      counts: Pick<QueryResult, 'bytesIn' | 'bytesOut' | 'retransmits' | 'resetsIn' | 'resetsOut'>,
    ): void => {
      const { bytesIn, bytesOut } = counts;
      const key = `${k.localIp}:${k.localPort}>${k.remoteIp}:${k.remotePort}`;
      const prev = this.last.get(key);
      const dt = prev ? (now - prev.at) / 1000 : 0;
      next.set(key, { at: now, in: bytesIn, out: bytesOut });
      path.conns.push({
        local: endpoint(k.localIp, k.localPort),
        remote: endpoint(k.remoteIp, k.remotePort),
        owner,
        state: TCP_STATE_NAMES[state] ?? String(state),
        bytesIn,
        bytesOut,
        rateIn: prev && dt > 0 ? (bytesIn - prev.in) / dt : 0,
        rateOut: prev && dt > 0 ? (bytesOut - prev.out) / dt : 0,
        retransmits: counts.retransmits,
        resetsIn: counts.resetsIn,
        resetsOut: counts.resetsOut,
      });
    };
    for (const conn of this.stack.tcp.connections()) {
      const s = conn.state;
      const nb = s.path.neighbor;
      const path = pathOf(
        this.neighborName(nb.const.ip, s.path.const.remoteIp, s.path.ifIndex),
        nb.cached.dstMac >= 0 ? formatMac(nb.cached.dstMac) : 'unresolved',
        this.fmt(s.path.const.remoteIp),
        s.path.cached.mtu,
      );
      const c = s.const;
      const owner = this.extra.ownerOf?.(c.localIp, c.localPort, c.remoteIp, c.remotePort) ?? 'host';
      add(path, c, owner, s.delegated.state, conn.stats);
    }
    for (const { owner, conns } of offloaded) {
      for (const q of conns) {
        // The NIC names the neighbor by MAC: file it under the host's neighbor of that MAC if there
        // is one (a gateway's), else under the peer itself (on-link).
        const mac = q.dstMac >= 0 ? formatMac(q.dstMac) : 'unresolved';
        const nb = [...byNeighbor.values()].find((n) => n.mac === mac);
        const remote = this.fmt(q.key.remoteIp);
        const path = pathOf(nb?.ip ?? remote, mac, remote, q.mtu);
        add(path, q.key, owner, q.state, q);
      }
    }
    this.last = next;
    const ip6 = this.stack.ip6;
    const addresses = this.stack.interfaces.flatMap((i) => [
      ...i.addresses.map((a) => `${formatIpv4(a.ip)}/${a.prefixLength}`),
      // An IPv6 address is named with its state unless it is usable (DAD passed, not deprecated).
      ...ip6
        .addresses(i)
        .map((a) => `${a.ip}/${a.prefixLength}${a.state === 'preferred' ? '' : ` (${a.state})`}`),
    ]);
    const counters = Object.fromEntries(
      Object.entries(this.stack.counters.snapshot()).filter(
        ([k]) => k.startsWith('tcp.') || k.startsWith('drop.') || k.startsWith('team.'),
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

/** Run one control request for a CLI command, printing the answer or the error. */
async function runControl(
  cmd: string,
  control: string | undefined,
  req: ControlRequest,
  print: (r: unknown) => string,
): Promise<void> {
  try {
    const r = await controlRequest(control ?? findControlSocket(), req, 60_000);
    process.stdout.write(`${print(r)}\n`);
  } catch (e) {
    process.stderr.write(`chimney ${cmd}: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}

export function registerStatusCommand(program: Command): void {
  program
    .command('move')
    .description('move live connections of a running `chimney serve` to a NIC or to the host stack')
    .argument('<to>', "a NIC id (its TAP's name) or 'host'")
    .option('--from <owner>', "only connections of this NIC (or 'host')")
    .option('--count <n>', 'at most this many connections', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`'${v}' is not a positive integer`);
      return n;
    })
    .option('--control <path>', `control socket of the server (default: the only one in ${CONTROL_DIR})`)
    .option('--json', 'print the answer as JSON')
    .action((to: string, o: { from?: string; count?: number; control?: string; json?: boolean }) =>
      runControl('move', o.control, { op: 'move', to, from: o.from, count: o.count }, (r) => {
        const x = r as { moved: number; refused: number };
        return o.json ? JSON.stringify(x) : `moved ${x.moved} connection(s) to ${to}, ${x.refused} refused`;
      }),
    );
  program
    .command('kill-nic')
    .description("failover drill: kill the worker thread of one of a running server's NICs")
    .argument('<nic>', "the NIC's id (its TAP's name)")
    .option('--control <path>', `control socket of the server (default: the only one in ${CONTROL_DIR})`)
    .action((nic: string, o: { control?: string }) =>
      runControl('kill-nic', o.control, { op: 'kill-nic', nic }, (r) => {
        const x = r as { threadId?: number };
        return `told the worker of ${nic} (thread ${x.threadId ?? '?'}) to stop`;
      }),
    );
  program
    .command('status')
    .description(
      'show the state trees of a running `chimney serve`: neighbors, paths, connections and their owners',
    )
    .option('--control <path>', `control socket of the server (default: the only one in ${CONTROL_DIR})`)
    .option('--json', 'print the snapshot as one JSON object')
    .option('-w, --watch', 'refresh the view in place, like top (q or Ctrl-C quits)')
    .option('--interval <ms>', 'refresh interval of --watch', intIn(100, 3_600_000), 1000)
    .option('-n, --count <n>', 'with --watch: stop after this many refreshes', intIn(1, 1_000_000))
    .action(
      async (o: { control?: string; json?: boolean; watch?: boolean; interval: number; count?: number }) => {
        if (o.watch) {
          try {
            const control = o.control ?? findControlSocket();
            return await watchStatus({ control, intervalMs: o.interval, count: o.count ?? 0 });
          } catch (e) {
            process.stderr.write(`chimney status: ${(e as Error).message}\n`);
            process.exitCode = 1;
            return;
          }
        }
        try {
          const s = await queryStatus(o.control ?? findControlSocket());
          process.stdout.write(o.json ? `${JSON.stringify(s)}\n` : `${formatStatus(s)}\n`);
        } catch (e) {
          process.stderr.write(`chimney status: ${(e as Error).message}\n`);
          process.exitCode = 1;
        }
      },
    );
}
