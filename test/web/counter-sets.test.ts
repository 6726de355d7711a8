/**
 * serve's `counters` control request answers every counter set raw, what status filters out: a
 * NIC's own (its timeouts undone, tail probes, timer drains) beside the host's and the team's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { counterSets } from '../../src/cli/admin-source.ts';
import { buildTeamRig } from '../team/team-sim.ts';

test("counterSets: the host's, the team's and each NIC's counters, each by its name", async () => {
  const rig = buildTeamRig({ seed: 5, nics: 2 });
  try {
    const [a, b] = rig.nics;
    a!.engine.counters.inc('tcp.rto.undo.eifel', 3);
    b!.engine.counters.inc('tcp.timer.drains', 2);
    rig.host.stack.counters.inc('tcp.tlp.probes');
    const sets = await counterSets(rig.host.stack, rig.host);
    assert.equal(sets[`nic:${a!.id}`]?.['tcp.rto.undo.eifel'], 3);
    assert.equal(sets[`nic:${b!.id}`]?.['tcp.timer.drains'], 2);
    assert.equal(sets[`nic:${b!.id}`]?.['tcp.rto.undo.eifel'], undefined, 'each NIC its own');
    assert.equal(sets.host?.['tcp.tlp.probes'], 1);
    assert.deepEqual(Object.keys(sets).sort(), ['host', `nic:${a!.id}`, `nic:${b!.id}`, 'team'].sort());
  } finally {
    rig.net.close();
  }
});
