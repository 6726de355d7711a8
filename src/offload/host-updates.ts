import type { Nic } from '../nic/nic.ts';
import type { Stack } from '../stack/stack.ts';
import type { NeighborState } from '../state/neighbor-state.ts';
import type { PathState } from '../state/path-state.ts';

/**
 * Host-side changes of cached state turned into updates: a neighbor's MAC, a path's MTU, TTL, TOS
 * or next hop is one update per NIC that runs connections, for the shared object, whatever the
 * number of connections beneath it. A NIC holding only closed connections' blocks (WorkerNic's
 * heldClosed, counted in its `load`) runs none to update: it is skipped.
 */
export class HostUpdates {
  private stopped = false;

  constructor(
    stack: Stack,
    private readonly nics: () => readonly Nic[],
    /** Whether any connection is offloaded at all (no updates otherwise). */
    private readonly active: () => boolean,
    private readonly onError: (e: unknown, nic: Nic) => void,
  ) {
    stack.neighbors.onChange((nb) => this.neighborChanged(nb));
    stack.ip.onChange((path) => this.pathChanged(path));
  }

  stop(): void {
    this.stopped = true;
  }

  private neighborChanged(nb: NeighborState): void {
    if (this.stopped || !this.active()) return;
    const ip = nb.const.ip;
    for (const nic of this.nics()) {
      if (nic.runningConns === 0) continue;
      nic
        .update(
          nb.const.ip6 === undefined
            ? { kind: 'neighbor', neighborIp: ip, dstMac: nb.cached.dstMac }
            : {
                kind: 'neighbor',
                neighborIp: 0,
                dstMac: nb.cached.dstMac,
                ip6: nb.const.ip6,
                vlanId: nb.const.vlanId,
              },
        )
        .catch((e) => this.onError(e, nic));
    }
  }

  private pathChanged(p: PathState): void {
    if (this.stopped || !this.active()) return;
    const nb = p.neighbor;
    for (const nic of this.nics()) {
      if (nic.runningConns === 0) continue;
      nic
        .update({
          kind: 'path',
          remoteIp: p.const.remoteIp,
          localIp: p.const.localIp,
          mtu: p.cached.mtu,
          ttl: p.cached.ttl,
          tos: p.cached.tos,
          neighbor: {
            ip: nb.const.ip,
            srcMac: nb.const.srcMac,
            vlanId: nb.const.vlanId,
            dstMac: nb.cached.dstMac,
            ...(nb.const.ip6 === undefined ? {} : { ip6: nb.const.ip6 }),
          },
        })
        .catch((e) => this.onError(e, nic));
    }
  }
}
