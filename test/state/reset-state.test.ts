/**
 * resetTcpState: a state nothing runs any more made a new one in place (a crash's rebuild takes
 * the dead LocalNic's released states instead of making new ones), and a rebuild into such a
 * spare gives the state a rebuild into a new object gives.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hardStateOf, rebuildTcpState } from '../../src/nic/hard-state.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import {
  createTcpState,
  DEFAULT_TCP_CACHED,
  resetTcpState,
  type TcpState,
  TcpStateId,
} from '../../src/state/tcp-state.ts';
import { sampleConn } from './helpers.ts';

function path(remoteIp = 0x0a000002) {
  const nb = createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: remoteIp }, 0x020000000002, 0);
  return createPathState({ localIp: 0x0a000001, remoteIp }, nb, 0, 1500);
}

/** Every scalar field of every part set to something no new state has, every list given an element. */
function dirty(s: TcpState): void {
  const parts = [s.const, s.cached, s.delegated, s.soft, s.soft.cubic] as unknown as Record<
    string,
    unknown
  >[];
  for (const o of parts) {
    for (const [k, v] of Object.entries(o)) {
      if (typeof v === 'number') o[k] = 4321.5;
      else if (typeof v === 'boolean') o[k] = !v;
      else if (typeof v === 'string') o[k] = `${v}-x`;
      else if (Array.isArray(v)) v.push({ start: 1, end: 2 });
    }
  }
}

test('resetTcpState leaves every field as createTcpState makes it, and makes no object', () => {
  const p = path();
  const old = sampleConn(p);
  dirty(old);
  const parts = [old.const, old.cached, old.delegated, old.soft, old.soft.cubic];
  const lists = [old.soft.ooo, old.soft.sacked, old.soft.recvSackRecent];
  const p2 = path(0x0a000003);
  const c = {
    localIp: 0x0a000001,
    localPort: 41000,
    remoteIp: 0x0a000003,
    remotePort: 443,
    tsEnabled: false,
    sackEnabled: true,
    wsEnabled: true,
    sndWscale: 3,
    rcvWscale: 2,
    remoteMss: 1400,
    localMss: 1380,
  };
  const cached = { ...DEFAULT_TCP_CACHED, sndBufSize: 8192, rcvBufSize: 16384, noDelay: true };
  const rings = { send: new ByteRing(64, 8192), recv: new ByteRing(64, 16384) };
  const got = resetTcpState(old, c, cached, p2, rings);
  assert.equal(got, old, 'the same state');
  assert.deepEqual(
    [got.const, got.cached, got.delegated, got.soft, got.soft.cubic],
    parts,
    'its parts are the objects it had',
  );
  assert.deepEqual([got.soft.ooo, got.soft.sacked, got.soft.recvSackRecent], lists, 'and its lists');
  assert.ok(got.delegated.sendBuffer === rings.send && got.delegated.recvBuffer === rings.recv);
  assert.equal(got.path, p2);
  // Field by field what a new state has (a field createTcpState gains and reset forgets fails here).
  assert.deepStrictEqual(got, createTcpState(c, cached, p2, rings));
});

test('a rebuild into a spare state gives what a rebuild into a new one gives, validated or not', () => {
  const p = path();
  const s = sampleConn(p);
  s.soft.ooo.length = 0;
  s.soft.recvSackRecent.length = 0;
  s.soft.sacked.length = 0;
  const hard = hardStateOf(s);
  const { sendBuffer: send, recvBuffer: recv } = s.delegated;
  const fresh = rebuildTcpState(hard, send, recv, s.cached, p, 2000);
  const spare = sampleConn(p, 1, 2);
  dirty(spare);
  const into = rebuildTcpState(hard, send, recv, s.cached, p, 2000, spare, true);
  assert.equal(into, spare);
  assert.deepStrictEqual(into, fresh);
  // Half-open is the one rule a connection of this thread can fail: refused without validation too.
  hard.state = TcpStateId.SYN_RECEIVED;
  assert.throws(
    () => rebuildTcpState(hard, send, recv, s.cached, p, 2000, spare, true),
    /cannot be offloaded/,
  );
});
