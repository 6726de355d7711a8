/**
 * Conformance: when a receiver ACKs at once and when it delays, Linux as the reference (see
 * harness.ts; src/stack/tcp/tcp-ack-mode.ts for the kernel's rules). Each case asserts what holds
 * whatever the timing: segments sent back to back, each with an ACK of its own (a delayed-ACK
 * receiver ACKs every second one, and no timer can fire between two frames read in one go), or an
 * ACK that cannot have come before a delayed-ACK timer (a floor, which load only raises).
 *
 * The DUT's application does not read in the cases that count ACKs: a reader that takes the socket
 * while frames arrive lets Linux coalesce them in its backlog, and one ACK then answers several.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ACK,
  type Conn,
  end,
  FULL,
  openConn,
  runCase,
  type Seg,
  seqAdd,
  seqDiff,
  suite,
  VARIANTS,
} from './harness.ts';

const st = suite('cfa', 37);

/** A full segment of the tester's (MSS 1000 less the timestamp option). */
const SEG = 988;

/** The DUT's pure ACKs from arrival `from` on. */
const pureAcks = (c: Conn, from: number): Seg[] =>
  c.tester.segs.slice(from).filter((s) => c.fromDut(s) && s.len === 0);

/**
 * Send `n` full segments back to back and wait until the DUT has ACKed all of them; returns the
 * ACK numbers it sent meanwhile, and the ends of the segments.
 */
async function burst(c: Conn, n: number): Promise<{ acks: number[]; ends: number[] }> {
  const from = c.tester.segs.length;
  const ends: number[] = [];
  for (let i = 0; i < n; i++) {
    c.data(SEG, ACK);
    ends.push(c.sndNxt);
  }
  const last = c.sndNxt;
  await c.expect((s) => s.ack === last, 3000, `the ACK of ${n} segments`, from);
  return { acks: pureAcks(c, from).map((s) => s.ack), ends };
}

describe('conformance: quick ACKs and delayed ACKs', { skip: st.skip, timeout: 240_000 }, () => {
  before(() => st.setup());
  after(() => st.teardown());

  for (const v of VARIANTS) {
    test(`${v.name}: the first segments of a connection are each ACKed at once (Linux's quick-ACK mode from the first data: tcp_event_data_recv, tcp_incr_quickack)`, async () => {
      await runCase(st, v, { read: false }, async ({ dut, tester }) => {
        const { c } = await openConn(dut, tester, FULL);
        const { acks, ends } = await burst(c, 6);
        for (const e of ends) assert.ok(acks.includes(e), `an ACK of its own for ${e}: ${acks.join(' ')}`);
      });
    });

    test(`${v.name}: data sent again after it was ACKed puts the receiver back in quick-ACK mode: the segments after it are each ACKed at once (Linux's tcp_data_queue: DelayedACKLost)`, async () => {
      await runCase(st, v, { read: false }, async ({ dut, tester }) => {
        const { c } = await openConn(dut, tester, FULL);
        // Past the quick ACKs of the start (at most 16, TCP_MAX_QUICKACKS): 40 segments in bursts.
        for (let i = 0; i < 4; i++) await burst(c, 10);
        // The last segment again: for the DUT, its ACK was lost.
        const from = c.tester.segs.length;
        c.send({ flags: ACK, seq: seqAdd(c.sndNxt, -SEG), payload: SEG });
        await c.expect((s) => s.len === 0 && s.ack === c.sndNxt, 3000, 'the answer to the duplicate', from);
        const { acks, ends } = await burst(c, 6);
        for (const e of ends) assert.ok(acks.includes(e), `an ACK of its own for ${e}: ${acks.join(' ')}`);
      });
    });

    test(`${v.name}: once the DUT answered a request within the delayed-ACK time, the next request's ACK waits to ride on the answer (Linux's pingpong mode: tcp_event_data_sent, net.ipv4.tcp_pingpong_thresh 1)`, async (t) => {
      await runCase(st, v, {}, async ({ dut, tester }) => {
        const { c, id } = await openConn(dut, tester, FULL);
        let asked = 0;
        const exchange = async (): Promise<{ sentAt: number; from: number; answer: Seg }> => {
          const from = tester.segs.length;
          const sentAt = performance.now();
          c.data(100);
          asked += 100;
          const want = asked;
          await dut.event((e) => e.ev === 'data' && e.bytes >= want, 3000, `request of ${want}`);
          dut.write(id, 200);
          const answer = await c.expect((s) => s.len > 0 && s.seq === c.rcvNxt, 3000, 'the answer', from);
          c.rcvNxt = end(answer);
          return { sentAt, from, answer };
        };
        const first = await exchange();
        // Linux delays ACKs only once an answer left within its ATO (40 ms, TCP_ATO_MIN) of the
        // request's arrival. The DUT's own clock tells: its ACK of the first request went at once
        // (quick-ACK mode, asserted by the first case), and its timestamps count milliseconds.
        const ack1 = pureAcks(c, first.from).find((s) => s.n < first.answer.n && s.ack === c.sndNxt);
        assert.ok(ack1?.ts && first.answer.ts, 'the first request drew a pure ACK, both with timestamps');
        const answeredIn = seqDiff(first.answer.ts.val, ack1.ts.val);
        c.send({ flags: ACK });
        const second = await exchange();
        assert.equal(second.answer.ack, c.sndNxt, 'the answer carries the ACK of the request');
        if (answeredIn > 30) {
          t.skip(
            `the first answer left ${answeredIn} ms after the request: the DUT may rightly not be interactive`,
          );
          return;
        }
        // The delayed-ACK timer cannot fire sooner than 40 ms (TCP_DELACK_MIN; 36 at HZ 250): a
        // pure ACK of the request earlier than 30 ms was sent at once.
        const early = pureAcks(c, second.from).filter(
          (s) => s.n < second.answer.n && s.ack === c.sndNxt && s.at - second.sentAt < 30,
        );
        assert.deepEqual(
          early.map((s) => `${s.ack}@${(s.at - second.sentAt).toFixed(1)}`),
          [],
          `no pure ACK at once (the first answer left ${answeredIn} ms after the request)`,
        );
      });
    });
  }

  test('tshark: no frame of any case, on either family, is malformed or fails a checksum', () =>
    st.checkCapture());
});
