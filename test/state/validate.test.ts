import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StateValidationError } from '../../src/core/errors.ts';
import type { OffloadTree } from '../../src/state/offload-tree.ts';
import { createPathState } from '../../src/state/path-state.ts';
import {
  decodeBatch,
  encodeBatch,
  STATE_CODEC_LAYOUT,
  STATE_CODEC_VERSION,
} from '../../src/state/state-codec.ts';
import { type TcpState, TcpStateId } from '../../src/state/tcp-state.ts';
import { isOffloadable, validateTcpState, validateTree, validateTrees } from '../../src/state/validate.ts';
import { sampleConn, sampleNeighbor, samplePath, sampleTrees } from './helpers.ts';

function refused(field: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof StateValidationError, `expected StateValidationError, got ${String(e)}`);
    assert.equal(e.field, field, e.message);
    return true;
  };
}

function firstConn(trees: OffloadTree[]): TcpState {
  return trees[0]!.paths[0]!.conns[0]!;
}

const L = STATE_CODEC_LAYOUT;
const PATH_AT = L.headerSize + L.neighborSize;
const TCP_AT = PATH_AT + L.pathSize;

function patched(f: (dv: DataView, buf: Uint8Array) => void): Uint8Array {
  const buf = encodeBatch(sampleTrees(1), 0);
  f(new DataView(buf.buffer), buf);
  return buf;
}

describe('malformed encodings are refused', () => {
  test('bad magic', () => {
    assert.throws(
      () =>
        decodeBatch(
          patched((dv) => dv.setUint32(0, 0xdeadbeef)),
          0,
        ),
      refused('magic'),
    );
  });
  test('unknown version', () => {
    assert.throws(
      () =>
        decodeBatch(
          patched((dv) => dv.setUint16(4, STATE_CODEC_VERSION + 1)),
          0,
        ),
      refused('version'),
    );
  });
  test('unknown flags', () => {
    assert.throws(
      () =>
        decodeBatch(
          patched((dv) => dv.setUint16(6, 1)),
          0,
        ),
      refused('flags'),
    );
  });
  test('a buffer shorter than the header', () => {
    assert.throws(() => decodeBatch(new Uint8Array(10), 0), refused('header'));
  });
  test('truncated buffer: the header length runs past the end', () => {
    const buf = encodeBatch(sampleTrees(1), 0);
    assert.throws(() => decodeBatch(buf.subarray(0, buf.length - 1), 0), refused('length'));
  });
  test('truncated buffer with a consistent length field: every cut is refused', () => {
    const buf = encodeBatch(sampleTrees(2), 0);
    for (let cut = L.headerSize; cut < buf.length; cut++) {
      const b = buf.slice(0, cut);
      new DataView(b.buffer).setUint32(8, cut);
      assert.throws(() => decodeBatch(b, 0), StateValidationError, `cut at ${cut}`);
    }
  });
  test('a ring length that runs past the end names the ring', () => {
    // Cut inside the send data of the only connection.
    const buf = encodeBatch(sampleTrees(1), 0, { soft: 'none' });
    const b = buf.slice(0, buf.length - 100);
    new DataView(b.buffer).setUint32(8, b.length);
    assert.throws(() => decodeBatch(b, 0), refused('delegated.sendBuffer'));
  });
  test('trailing garbage', () => {
    const buf = encodeBatch(sampleTrees(1), 0);
    const longer = new Uint8Array(buf.length + 3);
    longer.set(buf);
    assert.throws(() => decodeBatch(longer, 0), refused('length'));
    new DataView(longer.buffer).setUint32(8, longer.length);
    assert.throws(() => decodeBatch(longer, 0), refused('length'));
  });
  test('counts that could not fit in the buffer are refused before allocation', () => {
    for (const at of [12, 16, 20]) {
      assert.throws(
        () =>
          decodeBatch(
            patched((dv) => dv.setUint32(at, 0xffffffff)),
            0,
          ),
        refused('counts'),
      );
    }
  });
  test('a path pointing at a missing neighbor', () => {
    assert.throws(
      () =>
        decodeBatch(
          patched((dv) => dv.setUint32(PATH_AT, 1)),
          0,
        ),
      refused('path.neighbor'),
    );
  });
  test('a connection pointing at a missing path', () => {
    assert.throws(
      () =>
        decodeBatch(
          patched((dv) => dv.setUint32(TCP_AT, 7)),
          0,
        ),
      refused('tcp.path'),
    );
  });
  test('hostile list counts inside the soft block', () => {
    // ooo count is the first soft field; find it by encoding with only that group changed.
    const trees = sampleTrees(1);
    const c = firstConn(trees);
    c.soft.ooo = [];
    c.soft.sacked = [];
    c.soft.recvSackRecent = [];
    const buf = encodeBatch(trees, 0);
    const dv = new DataView(buf.buffer);
    // The soft block: u32 length, u8 groups, u32 ooo count, ...
    let off = -1;
    for (let i = TCP_AT; i < buf.length - 9; i++) {
      if (dv.getUint8(i + 4) === 7 && dv.getUint32(i) === buf.length - i - 4) off = i;
    }
    assert.ok(off > 0);
    dv.setUint32(off + 5, 0x10000000);
    assert.throws(() => decodeBatch(buf, 0), refused('soft.ooo'));
  });
});

interface Case {
  field: string;
  mutate: (trees: OffloadTree[]) => void;
}

const conn = (f: (s: TcpState) => void) => (trees: OffloadTree[]) => f(firstConn(trees));

const CASES: Record<string, Case> = {
  'snd.nxt beyond snd.max': {
    field: 'delegated.sndNxt',
    mutate: conn((s) => (s.delegated.sndNxt = s.delegated.sndMax + 1)),
  },
  'snd.nxt before snd.una': {
    field: 'delegated.sndNxt',
    mutate: conn((s) => (s.delegated.sndNxt = s.delegated.sndUna - 1)),
  },
  'snd.max before snd.una': {
    field: 'delegated.sndMax',
    mutate: conn((s) => (s.delegated.sndMax = s.delegated.sndUna - 1)),
  },
  'snd.max 2^31 past snd.una': {
    field: 'delegated.sndMax',
    mutate: conn((s) => (s.delegated.sndMax = (s.delegated.sndUna + 0x80000000) >>> 0)),
  },
  'less send data than in flight': {
    field: 'delegated.sendBuffer',
    mutate: conn((s) => s.delegated.sendBuffer.consume(250)),
  },
  'data queued after a sent FIN': {
    field: 'delegated.sendBuffer',
    mutate: conn((s) => {
      s.delegated.finQueued = true;
      s.delegated.finSent = true;
    }),
  },
  'FIN sent but never queued': {
    field: 'delegated.finSent',
    mutate: conn((s) => {
      s.delegated.finSent = true;
      s.delegated.sendBuffer.consume(100);
    }),
  },
  'receive window beyond its scale': {
    field: 'delegated.rcvAdv',
    mutate: conn((s) => (s.delegated.rcvAdv = (s.delegated.rcvNxt + (65535 << 7) + 1) >>> 0)),
  },
  'send window beyond its scale': {
    field: 'delegated.sndWnd',
    mutate: conn((s) => (s.delegated.sndWnd = (65535 << 7) + 1)),
  },
  'send window scale 15': { field: 'const.sndWscale', mutate: conn((s) => (s.const.sndWscale = 15)) },
  'receive window scale 15': { field: 'const.rcvWscale', mutate: conn((s) => (s.const.rcvWscale = 15)) },
  'MSS 63': { field: 'const.remoteMss', mutate: conn((s) => (s.const.remoteMss = 63)) },
  'MSS 65496': { field: 'const.localMss', mutate: conn((s) => (s.const.localMss = 65496)) },
  'state id 11': {
    field: 'delegated.state',
    mutate: conn((s) => ((s.delegated as { state: number }).state = 11)),
  },
  'local port 0': { field: 'const.localPort', mutate: conn((s) => (s.const.localPort = 0)) },
  'remote port 0': { field: 'const.remotePort', mutate: conn((s) => (s.const.remotePort = 0)) },
  'neighbor IP 0': { field: 'const.ip', mutate: (t) => (t[0]!.neighbor.const.ip = 0) },
  'path remote IP 0': { field: 'const.remoteIp', mutate: (t) => (t[0]!.paths[0]!.path.const.remoteIp = 0) },
  'MTU 67': { field: 'cached.mtu', mutate: (t) => (t[0]!.paths[0]!.path.cached.mtu = 67) },
  'MTU 65536': { field: 'cached.mtu', mutate: (t) => (t[0]!.paths[0]!.path.cached.mtu = 65536) },
  'path TTL 0': { field: 'cached.ttl', mutate: (t) => (t[0]!.paths[0]!.path.cached.ttl = 0) },
  'connection TTL 0': { field: 'cached.ttl', mutate: conn((s) => (s.cached.ttl = 0)) },
  'negative cwnd': { field: 'delegated.cwnd', mutate: conn((s) => (s.delegated.cwnd = -1)) },
  'NaN srtt': { field: 'delegated.srtt', mutate: conn((s) => (s.delegated.srtt = Number.NaN)) },
  'infinite rttvar': {
    field: 'delegated.rttvar',
    mutate: conn((s) => (s.delegated.rttvar = Number.POSITIVE_INFINITY)),
  },
  'negative rto': { field: 'delegated.rto', mutate: conn((s) => (s.delegated.rto = -200)) },
  'NaN deadline': {
    field: 'delegated.rtxDeadline',
    mutate: conn((s) => (s.delegated.rtxDeadline = Number.NaN)),
  },
  'receive data longer than rcvBufSize': {
    field: 'delegated.recvBuffer',
    mutate: conn((s) => ((s.cached as { rcvBufSize: number }).rcvBufSize = 10)),
  },
  'unknown congestion algorithm': {
    field: 'cached.congestion',
    mutate: conn((s) => ((s.cached as { congestion: string }).congestion = 'bbr')),
  },
  'VLAN id 4095': { field: 'const.vlanId', mutate: (t) => (t[0]!.neighbor.const.vlanId = 4095) },
  'SACKed range outside the flight': {
    field: 'soft.sacked',
    mutate: conn((s) => (s.soft.sacked[0] = { start: s.delegated.sndMax, end: s.delegated.sndMax + 10 })),
  },
  'a reordering degree of 2 with SACK': {
    field: 'soft.reordering',
    mutate: conn((s) => {
      (s.const as { sackEnabled: boolean }).sackEnabled = true;
      s.soft.reordering = 2;
    }),
  },
  'out-of-order segment before rcv.nxt': {
    field: 'soft.ooo',
    mutate: conn((s) => (s.soft.ooo[0]!.seq = s.delegated.rcvNxt)),
  },
};

describe('inconsistent states are refused, in memory and on arrival', () => {
  for (const [name, c] of Object.entries(CASES)) {
    test(name, () => {
      const trees = sampleTrees(1);
      c.mutate(trees);
      assert.throws(() => validateTrees(trees), refused(c.field));
      assert.throws(() => encodeBatch(trees, 0), refused(c.field));
      const buf = encodeBatch(trees, 0, { skipValidation: true });
      assert.throws(() => decodeBatch(buf, 0), refused(c.field));
    });
  }

  test('without SACK the reordering degree goes down to 1 (the flight, tcp_check_reno_reordering) and travels', () => {
    const trees = sampleTrees(1);
    const s = firstConn(trees);
    (s.const as { sackEnabled: boolean }).sackEnabled = false;
    s.soft.sacked = [];
    s.soft.reordering = 1;
    validateTrees(trees);
    assert.equal(firstConn(decodeBatch(encodeBatch(trees, 0), 0)).soft.reordering, 1);
    s.soft.reordering = 0;
    assert.throws(() => validateTrees(trees), refused('soft.reordering'));
  });

  test('unoffloadable states are refused; isOffloadable agrees', () => {
    const refusedStates = [
      TcpStateId.CLOSED,
      TcpStateId.LISTEN,
      TcpStateId.SYN_SENT,
      TcpStateId.SYN_RECEIVED,
      TcpStateId.TIME_WAIT,
    ];
    for (let id = 0; id <= 10; id++) {
      const trees = sampleTrees(1);
      const s = firstConn(trees);
      (s.delegated as { state: number }).state = id;
      const ok = !refusedStates.includes(id as never);
      assert.equal(isOffloadable(s), ok, `state ${id}`);
      if (ok) validateTcpState(s);
      else {
        assert.throws(() => validateTcpState(s), refused('delegated.state'));
        assert.throws(
          () => decodeBatch(encodeBatch(trees, 0, { skipValidation: true }), 0),
          refused('delegated.state'),
        );
      }
    }
  });

  test('a FIN in flight is allowed for in the send data', () => {
    const trees = sampleTrees(1);
    const d = firstConn(trees).delegated;
    d.state = TcpStateId.FIN_WAIT_1;
    d.finQueued = true;
    d.finSent = true;
    d.sndMax = (d.sndUna + d.sendBuffer.length + 1) >>> 0;
    d.sndNxt = d.sndMax;
    validateTrees(trees);
    d.sndMax = (d.sndMax + 1) >>> 0;
    assert.throws(() => validateTrees(trees), refused('delegated.sendBuffer'));
  });

  test('sequence numbers wrapping past 2^32 are in order', () => {
    const trees = sampleTrees(1);
    const d = firstConn(trees).delegated;
    d.sndUna = 0xffffff00;
    d.sndNxt = 0x10;
    d.sndMax = (0xffffff00 + 300) >>> 0;
    firstConn(trees).soft.sacked = [{ start: 0xfffffff0, end: 0x20 }];
    validateTrees(trees);
    const back = decodeBatch(encodeBatch(trees, 0), 0);
    assert.equal(firstConn(back).delegated.sndNxt, 0x10);
  });
});

describe('tree shape', () => {
  test('a path pointing at another neighbor than its tree', () => {
    const trees = sampleTrees(1);
    trees[0]!.paths[0]!.path.neighbor = sampleNeighbor(9);
    assert.throws(() => validateTree(trees[0]!), refused('path.neighbor'));
  });
  test('a connection pointing at another path than its node', () => {
    const trees = sampleTrees(1);
    firstConn(trees).path = samplePath(trees[0]!.neighbor);
    assert.throws(() => validateTree(trees[0]!), refused('tcp.path'));
  });
  test('a connection whose addresses differ from its path', () => {
    const trees = sampleTrees(1);
    firstConn(trees).const.remoteIp = 0x0b000001;
    assert.throws(() => validateTree(trees[0]!), refused('tcp.const'));
  });
  test('the same connection twice, or two with the same ports', () => {
    const trees = sampleTrees(1);
    const node = trees[0]!.paths[0]!;
    node.conns.push(node.conns[0]!);
    assert.throws(() => validateTree(trees[0]!), refused('tcp'));
    node.conns.pop();
    node.conns.push(sampleConn(node.path, node.conns[0]!.const.localPort));
    assert.throws(() => validateTree(trees[0]!), refused('tcp.const'));
  });
  test('one neighbor rooting two trees, or one path in two nodes', () => {
    const a = sampleTrees(1);
    assert.throws(() => validateTrees([a[0]!, { neighbor: a[0]!.neighbor, paths: [] }]), refused('neighbor'));
    const p = a[0]!.paths[0]!.path;
    a[0]!.paths.push({ path: p, conns: [] });
    assert.throws(() => validateTrees(a), refused('path'));
  });
  test('two paths between the same addresses', () => {
    const a = sampleTrees(1);
    const p = a[0]!.paths[0]!.path;
    a[0]!.paths.push({ path: createPathState({ ...p.const }, a[0]!.neighbor, 2, 1500), conns: [] });
    assert.throws(() => validateTrees(a), refused('path.const'));
  });
  test('garbage instead of state objects is refused, not crashed on', () => {
    const bad: unknown[] = [null, 5, 'x', {}, { neighbor: null, paths: [] }, { neighbor: {}, paths: [{}] }];
    for (const b of bad) assert.throws(() => validateTrees([b as OffloadTree]), StateValidationError);
    assert.throws(() => validateTcpState({} as TcpState), StateValidationError);
    assert.throws(
      () => validateTcpState({ const: {}, cached: {}, delegated: {} } as TcpState),
      StateValidationError,
    );
  });
});
