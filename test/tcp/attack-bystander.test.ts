import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type BystanderResult,
  connFlood,
  fragFlood,
  type RunOptions,
  type Scenario,
  sackAttack,
  strayAcks,
  timeWait,
  zeroWindow,
} from '../../bench/attacks.ts';

// Issue 11 item 4: none of the attacks stalls an established connection. Each attack of the
// benchmark runs here at a smaller size with its protection on, while a bystander downloads 1 MiB
// from the victim over a 100 Mbit/s port with 1 ms each way (about 100 ms of simulated time alone).
const BYTES = 1 << 20;
const on: RunOptions = { protect: true, attack: true, bystanderBytes: BYTES };

async function run(sc: Promise<Scenario>): Promise<{ detail: Record<string, number>; b: BystanderResult }> {
  const s = await sc;
  s.close();
  assert.ok(s.bystander, 'the bystander ran');
  const b = s.bystander;
  assert.equal(b.intact, true, `bystander got ${b.bytes} of ${BYTES} bytes`);
  assert.equal(b.bytes, BYTES);
  // Simulated time: ten times the quiet download, and no gap of a retransmission timeout.
  assert.ok(b.simMs < 1000, `bystander took ${b.simMs} ms of simulated time`);
  assert.ok(b.maxStallMs < 200, `bystander stalled ${b.maxStallMs} ms`);
  return { detail: s.detail, b };
}

describe('a bystander connection downloads intact and in bounded simulated time during each attack', () => {
  test('silent zero-window peers', async () => {
    const { detail } = await run(zeroWindow(on, 50));
    assert.equal(detail.aborted, 50);
    assert.equal(detail.connectionsLeft, 0);
  });

  test('connections closed into TIME_WAIT', async () => {
    const { detail } = await run(timeWait(on, 3000));
    assert.equal(detail.closed, 3000);
    assert.ok(detail.inTimeWait >= 3000);
  });

  test('stray ACKs to a listener', async () => {
    const { detail } = await run(strayAcks(on, 20_000));
    assert.equal(detail.connections, 0);
  });

  test('8-byte fragment flood', async () => {
    const { detail } = await run(fragFlood(on, 20_000));
    assert.equal(detail.queued, 20_000);
  });

  // With RACK's reordering timer: single-byte islands date no delivery, so nothing between them
  // is declared lost and the victim keeps sending at the ACK clock's rate (what the attacker can
  // and cannot make it do: bench/attacks.ts, sackAttack).
  test('a receiver SACKing alternate bytes: the scoreboard fills to its cap', async () => {
    const { detail } = await run(sackAttack(on, 3000));
    assert.equal(detail.segments, 3000);
    assert.equal(detail.mostRanges, 512);
  });

  test('a flood of connections nobody reads, past the stack limits', async () => {
    const { detail } = await run(connFlood(on, 700));
    assert.ok(detail.mostConnections <= 500, `${detail.mostConnections} connections`);
    assert.ok(detail.refused > 0);
    assert.ok(detail.shrunk > 0);
  });
});
