/**
 * The per-turn output budget (Linux's TCP small queues, in spirit): a connection that may send a
 * lot sends at most its budget per turn of the event loop, the rest in later turns after the
 * other connections' shares, and nothing is lost or sent twice on the way.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { activeOpen, Bench, bytes } from './harness.ts';

const MSS = 1460;

describe('output budget per turn', () => {
  test('two connections with a window each take turns, a budget at a time, and every byte goes once', () => {
    const b = new Bench();
    b.layer.outputBudget = 4 * MSS;
    const x = activeOpen(b);
    b.take();
    const y = activeOpen(b);
    b.take();
    const px = x.conn.localPort;
    x.conn.write(bytes(20 * MSS, 1));
    y.conn.write(bytes(20 * MSS, 2));
    const owner = (segs: ReturnType<Bench['take']>) =>
      segs.filter((s) => s.data.length > 0).map((s) => (s.h.srcPort === px ? 'x' : 'y'));
    assert.deepEqual(owner(b.take()), [...'xxxxyyyy'], 'one budget each in the turn of the writes');
    // The simulated clock runs every deferred turn of this instant in one flush: the turns follow
    // each other in order, a budget each, until the initial window (ten segments) is used up.
    b.flush();
    assert.deepEqual(owner(b.take()), [...'xxxxyyyyxxyy'], 'later turns: the same order, a budget at a time');
    b.flush();
    assert.deepEqual(b.take(), [], 'nothing more until ACKs come');
    for (const c of [x, y]) {
      const d = c.conn.state.delegated;
      assert.equal((d.sndMax - d.sndUna) >>> 0, 10 * MSS, 'each sent its window, once');
    }
  });

  test("a turn's bytes over all connections are bounded too; the rest follow in later turns, each byte once", () => {
    const b = new Bench();
    b.layer.outputBudget = 4 * MSS;
    b.layer.outputTurnBudget = 6 * MSS;
    // Turn by turn: the scheduler's deferral ends a turn, run here one at a time.
    const turns: (() => void)[] = [];
    b.env.clock.defer = (fn) => void turns.push(fn);
    const conns = [0, 1, 2].map(() => {
      const c = activeOpen(b);
      b.take();
      return c;
    });
    const dataOf = () => b.take().filter((s) => s.data.length > 0);
    // Three connections' data begins in one turn (as thousands of accepts' at a NIC worker did).
    for (const [i, c] of conns.entries()) c.conn.write(bytes(10 * MSS, i + 1));
    const ports = new Set<number>();
    const count = () => {
      const segs = dataOf();
      for (const s of segs) if (ports.size < 3) ports.add(s.h.srcPort);
      return segs.length;
    };
    const perTurn = [count()];
    for (let t = 0; t < 50 && turns.length > 0; t++) {
      for (const fn of turns.splice(0)) fn();
      perTurn.push(count());
      if (t === 1) assert.equal(ports.size, 3, 'by the third turn every connection has sent (round robin)');
    }
    assert.deepEqual(perTurn.slice(0, 1), [6], 'the turn of the writes: six segments, not twelve');
    assert.ok(
      perTurn.every((n) => n <= 6),
      `at most six segments a turn: ${perTurn.join(',')}`,
    );
    assert.equal(
      perTurn.reduce((a, n) => a + n, 0),
      30,
      'every connection sent its initial window (ten segments), once',
    );
    for (const c of conns) {
      const d = c.conn.state.delegated;
      assert.equal((d.sndMax - d.sndUna) >>> 0, 10 * MSS, 'each sent its window, once');
    }
  });

  test('without a budget a connection sends its whole window at once', () => {
    const b = new Bench();
    const x = activeOpen(b);
    b.take();
    x.conn.write(bytes(20 * MSS, 1));
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 10);
  });
});
