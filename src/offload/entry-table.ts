import type { ConnKey } from '../nic/nic.ts';
import { TupleMap } from '../nic/tuple-map.ts';
import type { Entry } from './transfer.ts';

/**
 * The host's table of offloaded connections, by four-tuple: which NIC runs each one. Looked up
 * for every frame that reaches the host for a NIC's connection and for every connection a
 * transfer moves, so it is keyed as the TCP layer's own table is (a small hash of the numbers,
 * chained: TupleMap), not by a string built from them, which cost more than the rest of a live
 * hand-over.
 */
export class EntryTable {
  private readonly map = new TupleMap<Entry>();

  get size(): number {
    return this.map.size;
  }

  get(k: ConnKey): Entry | undefined {
    return this.map.get(k);
  }

  find(localIp: number, localPort: number, remoteIp: number, remotePort: number): Entry | undefined {
    return this.map.lookup(localIp, localPort, remoteIp, remotePort);
  }

  /** Add `e`, or replace the entry of its four-tuple. */
  set(e: Entry): void {
    this.map.set(e.key, e);
  }

  delete(k: ConnKey): boolean {
    return this.map.delete(k);
  }

  /** Every entry, as a snapshot (callers change the table while they walk). */
  values(): Entry[] {
    return [...this.map.values()];
  }
}
