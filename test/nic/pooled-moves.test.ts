import assert from 'node:assert/strict';
import { describe, type TestContext, test } from 'node:test';
import fc from 'fast-check';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { socketKey, streamBothWays, workerSetup } from './worker-helpers.ts';

/** Where each connection runs: the host (-1) or WorkerNic 0 or 1. */
type Place = -1 | 0 | 1;

/** One step: the connections picked by `mask` that can take `verb` take it. */
interface Step {
  verb: 'offload' | 'move' | 'upload';
  nic: 0 | 1;
  mask: number;
}

const CONNS = 8;
const arbStep: fc.Arbitrary<Step> = fc.record({
  verb: fc.constantFrom('offload', 'move', 'upload'),
  nic: fc.constantFrom(0, 1),
  mask: fc.integer({ min: 1, max: (1 << CONNS) - 1 }),
});

/**
 * The sequence ends the same way every time, so that each NIC and the host read records into
 * states pooled by an earlier step of the same run: all up, all to 0, all to 1, all back to 0,
 * all up.
 */
const ALL = (1 << CONNS) - 1;
const TAIL: Step[] = [
  { verb: 'upload', nic: 0, mask: ALL },
  { verb: 'offload', nic: 0, mask: ALL },
  { verb: 'move', nic: 0, mask: ALL },
  { verb: 'move', nic: 1, mask: ALL },
  { verb: 'upload', nic: 0, mask: ALL },
];

/** Can connection `i`, at `at`, take this step? */
function takes(step: Step, at: Place): boolean {
  if (step.verb === 'offload') return at === -1;
  if (step.verb === 'move') return at === step.nic;
  return at !== -1;
}

function after(step: Step): Place {
  if (step.verb === 'offload') return step.nic;
  if (step.verb === 'move') return step.nic === 0 ? 1 : 0;
  return -1;
}

describe('pooled states on WorkerNics', () => {
  test('random sequences of offload, move and upload of streaming connections: pooled states reused, every byte intact', {
    timeout: 240_000,
  }, async () => {
    let seed = 70;
    let pooledHost = 0;
    let pooledWorkers = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(arbStep, { minLength: 8, maxLength: 12 }), async (steps) => {
        // Each run on its own network and workers, closed before the next (an assertion included).
        const cleanups: (() => void)[] = [];
        const ctx = { after: (f: () => void) => cleanups.push(f) } as unknown as TestContext;
        try {
          const { wh, peer } = await workerSetup(seed++, ctx);
          const nics = wh.nics as [WorkerNic, WorkerNic];
          // Paced while the steps run, so that every connection is still streaming at the last
          // step however slow the machine is; then the rest goes at once.
          let stepping = true;
          const gap = () => (stepping ? new Promise<void>((r) => setTimeout(r, 3)) : Promise.resolve());
          const st = await streamBothWays(wh.host, peer, CONNS, 1_000_000, 500, gap);
          const keys: ConnKey[] = st.sockets.map((s) => socketKey(s));
          const place: Place[] = keys.map(() => -1);
          const m = wh.offload;
          for (const step of [...steps, ...TAIL]) {
            const picked = keys
              .map((_, i) => i)
              .filter((i) => (step.mask >> i) & 1 && takes(step, place[i]!));
            if (picked.length === 0) continue;
            const ks = picked.map((i) => keys[i]!);
            const nic = nics[step.nic];
            const report =
              step.verb === 'offload'
                ? await m.offload(ks, nic)
                : step.verb === 'move'
                  ? await m.move(ks, nic, nics[step.nic === 0 ? 1 : 0])
                  : await m.upload(ks);
            assert.equal(report.moved.length, ks.length, `${step.verb}: every connection picked moved`);
            for (const i of picked) place[i] = after(step);
          }
          stepping = false;
          assert.equal(await st.done, 0, 'every direction of every connection intact');
          assert.deepEqual(st.errors, []);
          const counters = await Promise.all(nics.map((n) => n.counters()));
          const pooled0 = counters[0]!['nic.initiate.pooled'] ?? 0;
          pooledWorkers += pooled0 + (counters[1]!['nic.initiate.pooled'] ?? 0);
          pooledHost += nics[0].pooledReads + nics[1].pooledReads;
          // The tail alone: NIC 0 took back into the states it had released to NIC 1, and the host
          // read NIC 0's records (the upload) into the states it had handed it at the offload.
          // Moves between the NICs name the records: the host reads none of them.
          assert.ok(pooled0 >= CONNS, `NIC 0 read ${pooled0} records into pooled states`);
          assert.ok(nics[0].pooledReads >= CONNS, 'the host read into pooled states');
          // Each worker made a block's rings and records once and found them again when the
          // connection came back (the tail's last move to NIC 0 brought every one back there).
          for (const c of counters) {
            const made = c['nic.blocks.parts-made'] ?? 0;
            assert.ok(made > 0 && made <= CONNS, `parts made once per block: ${made}`);
          }
          const found0 = counters[0]!['nic.blocks.parts-found'] ?? 0;
          assert.ok(found0 >= CONNS, `NIC 0 found ${found0} blocks' parts again`);
          // The tail's move back to NIC 0 installed each connection where it had run one move
          // before: the host took up its old handle there, and the worker its old slot.
          assert.ok(nics[0].revivedHandles >= CONNS, `NIC 0 revived ${nics[0].revivedHandles} handles`);
          const reused0 = counters[0]!['nic.slots.reused'] ?? 0;
          assert.ok(reused0 >= CONNS, `NIC 0 took up ${reused0} slots again`);
          // ... and the connection objects: NIC 0's TCP layer its own, the host's (the tail's
          // upload after its offload) those it released.
          const revived0 = counters[0]!['tcp.adopt.revived'] ?? 0;
          assert.ok(revived0 >= CONNS, `NIC 0 revived ${revived0} connection objects`);
          const revivedHost = wh.stack.counters.get('tcp.adopt.revived');
          assert.ok(revivedHost >= CONNS, `the host revived ${revivedHost} connection objects`);
        } finally {
          for (const f of cleanups) f();
        }
      }),
      { numRuns: 3, endOnFailure: true },
    );
    assert.ok(pooledHost >= 3 * CONNS && pooledWorkers >= 3 * CONNS);
  });
});
