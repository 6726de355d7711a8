/**
 * Conformance: segments a careful receiver must judge (out-of-order FIN, timestamps, PAWS,
 * RFC 5961 blind attacks) and keepalive. Each case runs against the Linux kernel and against
 * Chimney (see harness.ts) and asserts the same answer from both.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ACK,
  type Conn,
  type Dut,
  type DutConfig,
  FIN,
  FULL,
  fmt,
  has,
  openConn,
  PSH,
  RST,
  runCase,
  type Seg,
  SYN,
  seqAdd,
  seqGe,
  sleep,
  suite,
  type Tester,
  VARIANTS,
  type Variant,
} from './harness.ts';

const st = suite('cfr', 33);

/** Send `n` bytes and wait for the ACK of everything sent so far. */
async function dataAcked(c: Conn, n: number, what: string): Promise<Seg> {
  const from = c.tester.segs.length;
  c.data(n);
  return c.expect((s) => has(s, ACK) && s.ack === c.sndNxt, 2000, what, from);
}

/** Run `body` on a fresh connection of a fresh DUT. */
function withConn(
  v: Variant,
  cfg: DutConfig,
  body: (a: { dut: Dut; tester: Tester; c: Conn; id: number }) => Promise<void>,
): Promise<void> {
  return runCase(st, v, cfg, async ({ dut, tester }) =>
    body({ dut, tester, ...(await openConn(dut, tester, FULL)) }),
  );
}

describe('conformance: hostile and unusual segments, keepalive', { skip: st.skip, timeout: 180_000 }, () => {
  before(() => st.setup());
  after(() => st.teardown());

  for (const v of VARIANTS) {
    test(`${v.name}: an out-of-order FIN is kept and acknowledged once the hole fills (RFC 9293 3.10.7.4, issue 11 defect 3)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        const base = c.sndNxt;
        // A lone FIN beyond a hole: an immediate duplicate ACK (RFC 5681 4.2), nothing taken.
        let from = c.tester.segs.length;
        c.send({ seq: seqAdd(base, 2000), flags: FIN | ACK });
        const d1 = await c.expect((s) => has(s, ACK), 1000, 'duplicate ACK for the lone FIN', from);
        assert.equal(d1.ack, base);
        // Data beyond the hole: another duplicate ACK.
        from = c.tester.segs.length;
        c.send({ seq: seqAdd(base, 1000), flags: ACK | PSH, payload: 1000 });
        const d2 = await c.expect((s) => has(s, ACK), 1000, 'duplicate ACK for data beyond the hole', from);
        assert.equal(d2.ack, base);
        // The hole fills: everything is acknowledged, the FIN included.
        from = c.tester.segs.length;
        c.send({ seq: base, flags: ACK | PSH, payload: 1000 });
        const all = await c.expect(
          (s) => has(s, ACK) && s.ack === seqAdd(base, 2001),
          2000,
          'ACK of data and FIN',
          from,
        );
        assert.ok(!has(all, RST));
        const eof = await dut.event((e) => e.ev === 'eof' && e.id === id, 3000, 'end of stream');
        assert.equal((eof as { bytes: number }).bytes, 2000);
      });
    });

    test(`${v.name}: TS.Recent is not taken from a segment that fails the ACK check (RFC 7323 4.3, Linux bd090dfc634d, issue 11 defect 4)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        await dataAcked(c, 100, 'ACK of the first data');
        // In window, acknowledging data never sent, with a timestamp far ahead: must be dropped
        // without moving TS.Recent (RFC 9293 3.10.7.4: SEG.ACK > SND.NXT, drop).
        c.send({
          flags: ACK | PSH,
          payload: 10,
          ack: seqAdd(c.rcvNxt, 100_000),
          ts: { val: c.tsVal() + 0x40000000, ecr: c.tsRecent },
        });
        await sleep(100);
        // Ordinary data with the ordinary clock must still be taken.
        const a = await dataAcked(c, 100, 'ACK of data after the forged segment (PAWS not poisoned)');
        assert.equal(a.ack, c.sndNxt);
        const got = await dut.event(
          (e) => e.ev === 'data' && e.id === id && e.bytes === 200,
          3000,
          '200 bytes read',
        );
        assert.ok(got);
      });
    });

    test(`${v.name}: PAWS drops an old timestamp and answers with an ACK (RFC 7323 5.3)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        await dataAcked(c, 100, 'ACK of the first data');
        const from = c.tester.segs.length;
        c.send({ flags: ACK | PSH, payload: 100, ts: { val: c.tsVal() - 100_000, ecr: c.tsRecent } });
        const dup = await c.expect((s) => has(s, ACK), 1000, 'ACK of the PAWS-failed segment', from);
        assert.equal(dup.ack, c.sndNxt, 'the old segment was not taken');
        await dataAcked(c, 100, 'the same bytes with a current timestamp');
        await dut.event((e) => e.ev === 'data' && e.id === id && e.bytes === 200, 3000, '200 bytes read');
        assert.ok(!dut.log.some((e) => e.ev === 'data' && e.bytes > 200), 'no byte twice');
      });
    });

    test(`${v.name}: a RST inside the window but not at RCV.NXT draws a challenge ACK (RFC 5961 3.2)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        const from = c.tester.segs.length;
        c.send({ seq: seqAdd(c.sndNxt, 10), flags: RST });
        const ch = await c.expect((s) => has(s, ACK), 1000, 'challenge ACK', from);
        assert.equal(ch.ack, c.sndNxt);
        assert.ok(!has(ch, RST));
        await dataAcked(c, 100, 'the connection lives on');
        assert.ok(!dut.log.some((e) => e.ev === 'error' && e.id === id));
      });
    });

    test(`${v.name}: a SYN on an established connection draws a challenge ACK (RFC 5961 4.2)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        const from = c.tester.segs.length;
        c.send({ seq: seqAdd(c.sndNxt, 5), ack: 0, flags: SYN, mss: 1000 });
        const ch = await c.expect((s) => s.flags !== SYN, 1000, 'challenge ACK', from);
        assert.ok(has(ch, ACK) && !has(ch, RST) && !has(ch, SYN), 'an ACK, not a RST or SYN-ACK');
        assert.equal(ch.ack, c.sndNxt);
        await dataAcked(c, 100, 'the connection lives on');
        assert.ok(!dut.log.some((e) => e.ev === 'error' && e.id === id));
      });
    });

    test(`${v.name}: a RST at exactly RCV.NXT resets the connection (RFC 5961 3.2)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        await dataAcked(c, 100, 'ACK of data');
        const from = c.tester.segs.length;
        c.send({ flags: RST });
        const err = await dut.event((e) => e.ev === 'error' && e.id === id, 3000, 'ECONNRESET');
        assert.equal((err as { code: string }).code, 'ECONNRESET');
        const answers = await c.tester.collect(c.fromDut, 300, from);
        assert.deepEqual(answers.length, 0, 'a RST is never answered');
      });
    });

    test(`${v.name}: a resent FIN ending at RCV.NXT has its ACK read and draws an immediate D-SACK (Linux tcp_sequence)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        dut.write(id, 500);
        const [data] = await c.receive(500, 3000, false);
        // Our FIN, acknowledging none of the data; the DUT acknowledges the FIN.
        const finSeq = c.sndNxt;
        let from = c.tester.segs.length;
        c.send({ flags: FIN | ACK, ack: data!.seq });
        c.sndNxt = seqAdd(finSeq, 1);
        await c.expect((s) => has(s, ACK) && s.ack === c.sndNxt, 1000, 'ACK of the FIN', from);
        // As if that ACK were lost: the FIN again (ending at RCV.NXT), now acknowledging the data.
        from = c.tester.segs.length;
        c.send({ seq: finSeq, flags: FIN | ACK });
        const dup = await c.expect((s) => has(s, ACK), 1000, 'answer to the resent FIN', from);
        assert.equal(dup.ack, c.sndNxt);
        assert.deepEqual(dup.sack, [[finSeq, c.sndNxt]], 'a D-SACK of the FIN');
        // Its ACK was read: the data is not sent again when the retransmission timer would fire.
        const again = await c.tester.collect((s) => c.fromDut(s) && s.len > 0, 1500, from);
        assert.deepEqual(again.map(fmt), [], 'no retransmission of acknowledged data');
      });
    });

    test(`${v.name}: a pure ACK at exactly RCV.NXT + RCV.WND is read and not answered (Linux tcp_sequence)`, async () => {
      await withConn(v, {}, async ({ dut, c, id }) => {
        dut.write(id, 500);
        const [data] = await c.receive(500, 3000, false);
        // The right edge the DUT's last segment offered; a zero-length segment there fits it.
        const edge = seqAdd(data!.ack, c.windowOf(data!));
        const from = c.tester.segs.length;
        c.send({ seq: edge, flags: ACK });
        // Read: it acknowledges the data, which is not sent again; acceptable: no answer.
        const after = await c.tester.collect(c.fromDut, 1500, from);
        assert.deepEqual(after.map(fmt), [], `nothing from the DUT:\n${c.tester.dump()}`);
      });
    });

    test(`${v.name}: data reaching past the right edge is dropped whole, its ACK unread, while read data waits; taken with an empty queue (Linux 9ca48d616ed7)`, async () => {
      /** The DUT sends 500 bytes; the tester, not acknowledging them, sends 200 bytes across the edge that do. */
      const across = async (
        c: Conn,
        dut: Dut,
        id: number,
      ): Promise<{ data: Seg; edge: number; ans: Seg; from: number }> => {
        dut.write(id, 500);
        const [data] = await c.receive(500, 3000, false);
        const edge = seqAdd(data!.ack, c.windowOf(data!));
        const from = c.tester.segs.length;
        c.send({ seq: seqAdd(edge, -100), flags: ACK | PSH, payload: 200 });
        const ans = await c.expect(
          (s) => has(s, ACK) && s.len === 0,
          1000,
          'answer to the segment across the edge',
          from,
        );
        return { data: data!, edge, ans, from };
      };
      await withConn(v, { read: false }, async ({ dut, c, id }) => {
        // 100 bytes wait in the receive queue, unread.
        await dataAcked(c, 100, 'ACK of the unread data');
        const { data, ans, from } = await across(c, dut, id);
        assert.equal(ans.ack, c.sndNxt, 'nothing taken');
        assert.deepEqual(ans.sack, [], 'nothing held out of order');
        await c.expect(
          (s) => s.len > 0 && s.seq === data.seq,
          3000,
          'the data again: the ACK was not read',
          from,
        );
      });
      await withConn(v, {}, async ({ c, dut, id }) => {
        const { edge, ans, from } = await across(c, dut, id);
        // The queue is empty: the segment is taken (Linux keeps all of it, Chimney what fits its
        // buffer) and its ACK read.
        assert.equal(ans.ack, c.sndNxt);
        assert.equal(ans.sack.length, 1, `one SACK block: ${fmt(ans)}`);
        assert.equal(ans.sack[0]![0], seqAdd(edge, -100));
        assert.ok(seqGe(ans.sack[0]![1], edge), `the block reaches the edge: ${fmt(ans)}`);
        const again = await c.tester.collect((s) => c.fromDut(s) && s.len > 0, 1500, from);
        assert.deepEqual(again.map(fmt), [], 'the data is not sent again');
      });
    });

    test(`${v.name}: out-of-order data received twice is D-SACKed, whole or in part (Linux tcp_data_queue_ofo, RFC 2883)`, async () => {
      await withConn(v, {}, async ({ c }) => {
        const base = c.sndNxt;
        const at = (n: number): number => seqAdd(base, n);
        const island = async (off: number, n: number, what: string): Promise<Seg> => {
          const from = c.tester.segs.length;
          c.send({ seq: at(off), flags: ACK | PSH, payload: n });
          return c.expect((s) => has(s, ACK) && s.sack.length > 0, 1000, what, from);
        };
        let a = await island(1000, 1000, 'SACK of the island');
        assert.deepEqual(a.sack, [[at(1000), at(2000)]]);
        a = await island(1200, 300, 'answer to a segment inside the island');
        assert.deepEqual(a.sack, [
          [at(1200), at(1500)],
          [at(1000), at(2000)],
        ]);
        a = await island(1800, 500, 'answer to a segment overlapping the island');
        assert.deepEqual(a.sack, [
          [at(1800), at(2000)],
          [at(1000), at(2300)],
        ]);
        assert.equal(a.ack, base, 'the hole is still open');
      });
    });

    test(`${v.name}: a RST numbered like the peer's FIN, or at the edge of the highest SACK block, resets (Linux's RFC 5961 matches)`, async () => {
      /** The DUT's connection is gone: what it is asked to write never reaches the wire. */
      const gone = async (dut: Dut, c: Conn, id: number, what: string): Promise<void> => {
        // The RST crosses the bridge before the DUT is asked to write.
        await sleep(200);
        const from = c.tester.segs.length;
        dut.write(id, 100);
        const sent = await c.tester.collect((s) => c.fromDut(s) && s.len > 0, 500, from);
        assert.deepEqual(sent.map(fmt), [], `${what}: ${c.tester.dump()}`);
      };
      await withConn(v, {}, async ({ dut, c, id }) => {
        const finSeq = c.sndNxt;
        const from = c.tester.segs.length;
        c.data(0, FIN | ACK);
        await c.expect((s) => has(s, ACK) && s.ack === c.sndNxt, 1000, 'ACK of the FIN', from);
        c.send({ seq: finSeq, flags: RST });
        await gone(dut, c, id, 'reset at RCV.NXT - 1 after the FIN');
      });
      await withConn(v, {}, async ({ dut, c, id }) => {
        const base = c.sndNxt;
        const from = c.tester.segs.length;
        c.send({ seq: seqAdd(base, 500), flags: ACK | PSH, payload: 500 });
        const d = await c.expect((s) => has(s, ACK) && s.sack.length > 0, 1000, 'SACK of the island', from);
        assert.deepEqual(d.sack, [[seqAdd(base, 500), seqAdd(base, 1000)]]);
        c.send({ seq: seqAdd(base, 1000), flags: RST });
        await gone(dut, c, id, 'reset at the right edge of the SACK block');
      });
    });

    test(`${v.name}: keepalive probes at SND.NXT-1, then gives up after the configured count (RFC 9293 3.8.4)`, async () => {
      await withConn(v, { keepalive: { idleS: 1, intvlS: 1, cnt: 2 } }, async ({ dut, c, id }) => {
        await dataAcked(c, 10, 'ACK of data');
        const probes: Seg[] = [];
        let from = c.tester.segs.length;
        while (probes.length < 2) {
          const p = await c.expect(() => true, 4000, `keepalive probe ${probes.length + 1}`, from);
          from = p.n + 1;
          // Linux sends no data; one garbage octet is the RFC's other form. Either sits below SND.NXT.
          assert.ok(p.len <= 1 && has(p, ACK) && !has(p, RST), `a probe: ${c.tester.dump()}`);
          assert.equal(p.seq, seqAdd(c.rcvNxt, -1), 'the probe sits at SND.NXT - 1');
          probes.push(p);
        }
        const err = await dut.event((e) => e.ev === 'error' && e.id === id, 4000, 'ETIMEDOUT');
        assert.equal((err as { code: string }).code, 'ETIMEDOUT');
        // Linux also resets the peer (tcp_keepalive_timer sends an active RST); the RFC asks only
        // that the connection be closed, so the RST is not required of either.
        const extra = c.tester.segs.slice(from).filter((s) => c.fromDut(s) && !has(s, RST));
        assert.deepEqual(
          extra.map((s) => s.n),
          [],
          'no probe beyond the count',
        );
      });
    });
  }

  test('tshark: no frame of any case, on either family, is malformed or fails a checksum', () =>
    st.checkCapture());
});
