/**
 * The order a failover moves a member's connections in: those whose peers hold the least of our
 * data first (`neediestFirst`), since with a member's connections in batches the last batch waits
 * for every one before it; a dead member's are rebuilt in the order given.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { emptyHardState, type HardState } from '../../src/nic/hard-state.ts';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import { ManagerOffloader, neediestFirst } from '../../src/team/manager-offloader.ts';
import type { MoveResult } from '../../src/team/team.ts';
import { assertClean, runScenario } from './scenario.ts';

const key = (port: number): ConnKey => ({ localIp: 1, localPort: 80, remoteIp: 2, remotePort: port });

describe('failover order', () => {
  test('neediestFirst: least unread or in flight at the peer first, unreadable as nothing, ties in order', () => {
    // [max window offered, window now, snd.una, snd.max] by remote port.
    const hard = new Map<number, [number, number, number, number]>([
      [1, [62_464, 0, 1000, 1000]], // the peer holds a whole window unread
      [2, [62_464, 62_464, 5000, 5000]], // read everything, nothing in flight: waits for us
      [3, [62_464, 62_464, 5000, 35_000]], // read everything, 30,000 bytes on the way
      [4, [62_464, 40_000, 0xfffffff0, 0x10]], // 22,464 unread, 32 in flight across the wrap
      [6, [62_464, 62_464, 7, 7]], // as 2: keeps its place after it
    ]);
    const read = (k: ConnKey, out: HardState): HardState | null => {
      const h = hard.get(k.remotePort);
      if (h === undefined) return null;
      [out.maxSndWnd, out.sndWnd, out.sndUna, out.sndMax] = h;
      return out;
    };
    const keys = [1, 2, 3, 4, 5, 6].map(key);
    assert.deepEqual(
      neediestFirst(keys, read).map((k) => k.remotePort),
      [2, 5, 6, 4, 3, 1],
    );
    // One state object is reused for every read: no allocation per connection.
    const outs = new Set<HardState>();
    neediestFirst(keys, (k, out) => {
      outs.add(out);
      return read(k, out);
    });
    assert.equal(outs.size, 1);
  });

  test('a NIC that cannot tell its connections’ hard state keeps the order given', () => {
    const keys = [3, 1, 2].map(key);
    const o = new ManagerOffloader(null as never);
    assert.equal(o.neediestFirst(keys, {} as Nic), keys);
    const nic = {
      hardState: (k: ConnKey, out = emptyHardState()): HardState => {
        out.maxSndWnd = 10;
        out.sndWnd = k.remotePort;
        return out;
      },
    };
    assert.deepEqual(
      o.neediestFirst(keys, nic as unknown as Nic).map((k) => k.remotePort),
      [3, 2, 1],
      'a NIC that can: more window open, less unread',
    );
  });

  /** A two-NIC scenario with one fault on the first, its mover recording the order asked and moved. */
  async function recorded(kind: 'cut' | 'crash') {
    const ordered: ConnKey[][] = [];
    const moved: ConnKey[][] = [];
    const given: ConnKey[][] = [];
    const r = await runScenario({
      seed: 1,
      nics: 2,
      conns: 8,
      bytes: 300_000,
      limitMs: 20_000,
      faults: [{ at: 5, kind, nic: 0 }],
      onRig: (rig) => {
        class Recording extends ManagerOffloader {
          override connectionsOn(nic: Nic): ConnKey[] {
            const keys = super.connectionsOn(nic);
            given.push([...keys]);
            return keys;
          }
          override neediestFirst(keys: ConnKey[]): ConnKey[] {
            const out = [...keys].reverse();
            ordered.push(out);
            return out;
          }
          override async move(keys: ConnKey[], from: Nic, to: Nic): Promise<MoveResult> {
            moved.push([...keys]);
            return super.move(keys, from, to);
          }
          override async recover(keys: ConnKey[], from: Nic, to: Nic | null): Promise<MoveResult> {
            moved.push([...keys]);
            return super.recover(keys, from, to);
          }
        }
        rig.team.setOffloader(new Recording(rig.manager));
      },
    });
    assertClean(r);
    return { ordered, moved, given };
  }

  test('a failover moves the failed member’s connections in the order neediestFirst gives', async () => {
    const { ordered, moved } = await recorded('cut');
    assert.equal(ordered.length, 1, 'asked once, for the one failover');
    assert.ok(ordered[0]!.length > 1, `the cut member ran several connections: ${ordered[0]!.length}`);
    assert.deepEqual(moved.flat(), ordered[0]);
  });

  test('a dead member’s connections are rebuilt in the order given, not asked for an order', async () => {
    const { ordered, moved, given } = await recorded('crash');
    assert.equal(ordered.length, 0);
    assert.ok(given.length === 1 && given[0]!.length > 1, `the dead member ran several: ${given}`);
    assert.deepEqual(moved.flat(), given[0]);
  });
});
