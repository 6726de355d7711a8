import { decodeReleasedBy } from '../nic/host-nic.ts';
import { isTreeTransfer, type Nic } from '../nic/nic.ts';
import { flattenTrees } from '../state/offload-tree.ts';
import { releaseTreeAddresses } from '../state/state-codec.ts';
import type { TcpState } from '../state/tcp-state.ts';
import { rebuild } from './rebuild.ts';
import type { Item, ItemsByState, TransferProtocol, TransferReport } from './transfer.ts';

/**
 * `dst` installed `items` but was marked failed before they settled there (an offload under way
 * when its link went): nothing is re-pointed at it. They come back into the host, their sockets
 * still frozen and their 4-tuples still held there, and are prodded, since what the NIC sent on
 * its dead link never left. A NIC that cannot answer the terminate (dead now) or answers with
 * what does not decode has them rebuilt from the hard state it ran them on. The host never
 * refuses, so nothing is lost that the NIC kept; the offload policy places them again later.
 *
 * With `report`, each is listed there as refused (it did not reach the destination asked for).
 */
export async function withdraw(
  t: TransferProtocol,
  items: readonly Item[],
  dst: Nic,
  report?: TransferReport,
): Promise<void> {
  const stack = t.stack;
  stack.counters.inc('offload.settle.refused', items.length);
  const reason = `${dst.id} failed during the transfer`;
  const back: TransferReport = { moved: [], refused: [] };
  {
    let states: TcpState[] | null = null;
    try {
      const released = await t.wait(
        dst.terminate(
          items.map((it) => it.key),
          { trees: dst.inProcess },
        ),
      );
      if (isTreeTransfer(released)) states = flattenTrees(released.trees);
      else {
        // As a transfer's release: the host's placeholders hold the IPv6 handles already.
        const trees = decodeReleasedBy(dst, released, stack.clock.now(), stack.addrs);
        releaseTreeAddresses(trees);
        states = flattenTrees(trees);
      }
    } catch {
      stack.counters.inc('offload.settle.refused-rebuilt', items.length);
    }
    // Prodded, rebuilt or terminated, whatever the transfer's own options say: what the NIC sent
    // on its dead link never left.
    if (states === null) await rebuild(t, [...items], dst, 'host', back, true);
    else {
      const byState: ItemsByState = new Map();
      t.pairReleased(states, items, byState, back);
      for (const s of await t.settle([...byState.keys()], byState, dst, 'host', undefined, true))
        back.moved.push(byState.get(s)!.key);
    }
  }
  if (report === undefined) return;
  for (const key of back.moved) report.refused.push({ key, status: 'failure', reason });
  for (const f of back.refused) report.refused.push(f);
}
