import type { ConnKey, Nic } from '../nic/nic.ts';
import type { MovePhases } from '../offload/move-phases.ts';
import type { OffloadManager, TransferReport } from '../offload/offload-manager.ts';
import { prodInPlace } from '../stack/tcp/tcp-handover.ts';
import { isOffloadable } from '../state/validate.ts';
import type { MoveResult, TeamOffloader } from './team.ts';

/**
 * The team's mover, on the offload manager: every failover transfer prods the connections it
 * installs (the peer resumes at once) and sends whatever the destination refuses straight to the
 * host rather than back to the member that failed.
 */
export class ManagerOffloader implements TeamOffloader {
  constructor(readonly manager: OffloadManager) {}

  connectionsOn(nic: Nic): ConnKey[] {
    return this.manager.keysOn(nic);
  }

  ownerOf(localIp: number, localPort: number, remoteIp: number, remotePort: number): Nic | null {
    return this.manager.nicOf(localIp, localPort, remoteIp, remotePort);
  }

  inHost(): ConnKey[] {
    const out: ConnKey[] = [];
    for (const c of this.manager.stack.tcp.connections()) {
      if (c.listener !== null || !isOffloadable(c.state)) continue;
      out.push({
        localIp: c.localIp,
        localPort: c.localPort,
        remoteIp: c.remoteIp,
        remotePort: c.remotePort,
      });
    }
    return out;
  }

  prodHost(): number {
    return this.manager.charged(() => {
      // Taken first: output may change the table under an iteration.
      const conns = [...this.manager.stack.tcp.connections()];
      let n = 0;
      for (const c of conns) if (c.listener === null && prodInPlace(c)) n++;
      return n;
    });
  }

  async move(keys: ConnKey[], from: Nic, to: Nic, phases?: MovePhases): Promise<MoveResult> {
    return this.result(await this.manager.move(keys, from, to, { prod: true, rollbackToHost: true, phases }));
  }

  async upload(keys: ConnKey[], _from: Nic, phases?: MovePhases): Promise<MoveResult> {
    return this.result(await this.manager.upload(keys, { prod: true, phases }));
  }

  async offload(keys: ConnKey[], to: Nic, prod = true): Promise<MoveResult> {
    return this.result(await this.manager.offload(keys, to, { prod }));
  }

  async recover(keys: ConnKey[], from: Nic, to: Nic | null, phases?: MovePhases): Promise<MoveResult> {
    return this.result(await this.manager.recover(from, to ?? 'host', keys, phases));
  }

  refuseFailed(failed: (nic: Nic) => boolean): void {
    this.manager.failed = failed;
  }

  private result(r: TransferReport): MoveResult {
    const inHost: ConnKey[] = [];
    const lost: ConnKey[] = [];
    for (const f of r.refused) {
      if (f.status === 'closed') continue;
      const o = this.manager.ownerOf(f.key);
      if (o === 'host') inHost.push(f.key);
      else if (o === null) lost.push(f.key);
    }
    return { moved: r.moved, inHost, lost };
  }
}
