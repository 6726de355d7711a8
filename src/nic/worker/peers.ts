import { MessageChannel } from 'node:worker_threads';
import type { WorkerNic } from '../worker-nic.ts';

/**
 * Let two WorkerNics of one team hand each other the frames of each other's connections directly
 * (`Nic.peer`): each gets the other's owner table and one end of a channel between the two
 * threads (issue 10 item 6; see owner-table.ts). A NIC already dead is left alone: its frames keep
 * the host path. Returns whether the two were linked.
 */
export function peerWorkers(a: WorkerNic, b: WorkerNic): boolean {
  if (a === b) return false;
  if (a.death !== null || b.death !== null) return false;
  const { port1, port2 } = new MessageChannel();
  a.post({ t: 'peer', id: b.id, owner: b.recordOwner, port: port1, owners: b.owners.sab }, [port1]);
  b.post({ t: 'peer', id: a.id, owner: a.recordOwner, port: port2, owners: a.owners.sab }, [port2]);
  a.peered.push(b);
  b.peered.push(a);
  // Either may know the host's address table already; the other's worker needs it to read the
  // IPv6 segments of its peer's connections.
  const addrs = a.hostAddrs ?? b.hostAddrs;
  if (addrs !== null) a.learnHostAddrs(addrs);
  return true;
}
