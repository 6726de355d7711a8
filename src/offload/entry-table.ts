import type { ConnKey } from '../nic/nic.ts';
import { hashOf, sameTuple } from '../stack/tcp/conn-table.ts';
import type { Entry } from './transfer.ts';

interface Node {
  entry: Entry;
  next: Node | null;
}

/**
 * The host's table of offloaded connections, by four-tuple: which NIC runs each one. Looked up
 * for every frame that reaches the host for a NIC's connection and for every connection a
 * transfer moves, so it is keyed as the TCP layer's own table is (a small hash of the numbers,
 * chained), not by a string built from them, which cost more than the rest of a live hand-over.
 */
export class EntryTable {
  private readonly map = new Map<number, Node>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(k: ConnKey): Entry | undefined {
    return this.find(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  }

  find(localIp: number, localPort: number, remoteIp: number, remotePort: number): Entry | undefined {
    for (
      let n = this.map.get(hashOf(localIp, localPort, remoteIp, remotePort)) ?? null;
      n !== null;
      n = n.next
    ) {
      if (sameTuple(n.entry.key, localIp, localPort, remoteIp, remotePort)) return n.entry;
    }
    return undefined;
  }

  /** Add `e`, or replace the entry of its four-tuple. */
  set(e: Entry): void {
    const k = e.key;
    const h = hashOf(k.localIp, k.localPort, k.remoteIp, k.remotePort);
    const head = this.map.get(h);
    for (let n = head ?? null; n !== null; n = n.next) {
      if (sameTuple(n.entry.key, k.localIp, k.localPort, k.remoteIp, k.remotePort)) {
        n.entry = e;
        return;
      }
    }
    this.map.set(h, { entry: e, next: head ?? null });
    this.count++;
  }

  delete(k: ConnKey): boolean {
    const h = hashOf(k.localIp, k.localPort, k.remoteIp, k.remotePort);
    let prev: Node | null = null;
    for (let n = this.map.get(h) ?? null; n !== null; prev = n, n = n.next) {
      if (!sameTuple(n.entry.key, k.localIp, k.localPort, k.remoteIp, k.remotePort)) continue;
      if (prev !== null) prev.next = n.next;
      else if (n.next !== null) this.map.set(h, n.next);
      else this.map.delete(h);
      this.count--;
      return true;
    }
    return false;
  }

  /** Every entry, as a snapshot (callers change the table while they walk). */
  values(): Entry[] {
    const out: Entry[] = [];
    for (const head of this.map.values())
      for (let n: Node | null = head; n !== null; n = n.next) out.push(n.entry);
    return out;
  }
}
