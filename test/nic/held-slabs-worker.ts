/**
 * The worker side of held-slabs.test.ts: a thread that names blocks as a NIC's worker does
 * (canonicalSlab, knownBlock, blockParts) and collects its garbage when told.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import {
  blockParts,
  canonicalSlab,
  dropSlabs,
  knownBlock,
  partsCount,
} from '../../src/nic/worker/conn-blocks.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

type Msg =
  | {
      t: 'block';
      sab: SharedArrayBuffer;
      id: number;
      at: number;
      send: number;
      recv: number;
      capacity: number;
    }
  | { t: 'gc' }
  | { t: 'gone'; id: number };

parentPort!.on('message', (m: Msg) => {
  if (m.t === 'gc') {
    gc();
    parentPort!.postMessage({ made: partsCount.made });
    return;
  }
  if (m.t === 'gone') {
    dropSlabs([m.id]);
    parentPort!.postMessage({ made: partsCount.made });
    return;
  }
  // As a message's blocks are read (transfer-wire's blockList): the buffer as this thread's
  // object of its number, the block as known, its parts found or made. Nothing is kept here.
  const sab = canonicalSlab(m.sab, m.id);
  const b = knownBlock(sab, m.at, m.send, m.capacity, m.recv, m.capacity) ?? {
    sab,
    at: m.at,
    send: { sab, offset: m.send, capacity: m.capacity },
    recv: { sab, offset: m.recv, capacity: m.capacity },
  };
  blockParts(b);
  parentPort!.postMessage({ made: partsCount.made });
});
