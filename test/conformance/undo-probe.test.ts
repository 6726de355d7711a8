/**
 * Conformance: the partial ACK's undo and the loss probe's limits, against the Linux kernel and
 * Chimney (see harness.ts). The tester plays a path of RTT_MS (the handshake's ACK waits that
 * long), so the DUT's loss probe is two RTTs away and cannot fire between the tester's steps;
 * the minimum RTO is 3 s, so what comes within half of it is no timer's doing.
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
  sleep,
  suite,
  twoSegments,
  VARIANTS,
  waitUntil,
} from './harness.ts';

const st = suite('cfu', 36);
const RTT_MS = 100;

/** The DUT's first `n` segments in order, as the tester saw them. */
async function segments(c: Conn, n: number): Promise<Seg[]> {
  const segs: Seg[] = [];
  let next = c.rcvNxt;
  while (segs.length < n) {
    const s = await c.expect((x) => x.len > 0 && x.seq === next, 3000, `segment at ${next}`);
    segs.push(s);
    next = end(s);
  }
  return segs;
}

describe("conformance: the partial ACK's undo, the loss probe's limits", {
  skip: st.skip,
  timeout: 120_000,
}, () => {
  before(() => st.setup());
  after(() => st.teardown());

  for (const v of VARIANTS) {
    test(`${v.name}: a partial ACK in recovery that echoes the originals' timestamp, no retransmission out, undoes the window cut: new data fills the old window at once (Linux's tcp_try_undo_partial; CUBIC on both)`, async () => {
      // Ten segments out; the first is late, the next three arrive: a recovery resends the
      // first, with the window cut to seven (PRR lets the resend alone go). Then the original
      // first arrives after all: the ACK of 0-3 echoes its TSval, older than the resend's, and
      // no resend is out. Linux undoes the cut and leaves the recovery, and slow start takes the
      // segment delivered (ss: cwnd 11): with six in flight, four new segments go on that ACK (a
      // fifth waits in tcp_tso_should_defer; Chimney, which has no such deferral, sends it).
      // Without the undo, PRR lets one. Within 150 ms: the loss probe is two RTTs away.
      await runCase(st, v, { rtoMinMs: 3000, congestion: 'cubic' }, async ({ dut, tester }) => {
        const { c, id } = await openConn(dut, tester, { ...FULL, window: 500 }, RTT_MS);
        dut.write(id, 30 * 988);
        const segs = await segments(c, 10);
        const ecr = segs[0]!.ts!.val;
        // A round trip of the path: the SACKs make the minimum RTT RTT_MS, and the partial ACK
        // 20 ms after the resend is then too soon to be for the resend (RACK's rule, Linux's
        // tcp_rack_advance): it dates nothing, and nothing sent after the originals is lost.
        await waitUntil(segs[9]!.at + RTT_MS);
        let from = tester.segs.length;
        c.send({ flags: ACK, sack: [[segs[1]!.seq, end(segs[3]!)]], ts: { val: c.tsVal(), ecr } });
        await c.expect((s) => s.len > 0 && s.seq === segs[0]!.seq, 1000, 'the fast retransmit', from);
        await sleep(20);
        from = tester.segs.length;
        c.rcvNxt = end(segs[3]!);
        c.send({ flags: ACK, ts: { val: c.tsVal(), ecr } });
        const sent = await tester.collect((s) => c.fromDut(s) && s.len > 0, 150, from);
        const seqs = sent.map((s) => s.seq);
        assert.deepEqual(
          seqs.filter((q) => segs.some((s) => s.seq === q)),
          [],
          `nothing resent:\n${tester.dump()}`,
        );
        assert.ok(seqs.length >= 4, `at least four new segments (${seqs.length}):\n${tester.dump()}`);
        c.rcvNxt = seqs.length > 0 ? end(sent.at(-1)!) : end(segs[9]!);
        c.send({ flags: ACK });
      });
    });

    test(`${v.name}: a partial ACK in recovery that echoes the originals' timestamp while resends are out sends new data only: the holes marked lost wait (Linux's tcp_try_undo_partial with retrans_out; CUBIC on both)`, async () => {
      // 0 and 4-8 are late, 1-3 and 9 arrive: the recovery resends 0, then (RACK marks 4-8
      // lost) 4-6, as far as PRR allows. The original 0 then arrives: the ACK of 0-3 echoes its
      // TSval. The resends of 4-6 are out, so no undo; on that ACK Linux clocks out new data
      // and resends nothing more, so 7 and 8 wait for the next ACK.
      await runCase(st, v, { rtoMinMs: 3000, congestion: 'cubic' }, async ({ dut, tester }) => {
        const { c, id } = await openConn(dut, tester, { ...FULL, window: 500 }, RTT_MS);
        dut.write(id, 30 * 988);
        const segs = await segments(c, 10);
        const ecr = segs[0]!.ts!.val;
        const ts = () => ({ val: c.tsVal(), ecr });
        await waitUntil(segs[9]!.at + RTT_MS);
        let from = tester.segs.length;
        c.send({ flags: ACK, sack: [[segs[1]!.seq, end(segs[3]!)]], ts: ts() });
        await c.expect((s) => s.len > 0 && s.seq === segs[0]!.seq, 1000, 'the fast retransmit', from);
        await sleep(2);
        from = tester.segs.length;
        c.send({
          flags: ACK,
          sack: [
            [segs[9]!.seq, end(segs[9]!)],
            [segs[1]!.seq, end(segs[3]!)],
          ],
          ts: ts(),
        });
        await c.expect((s) => s.len > 0 && s.seq === segs[4]!.seq, 1000, 'the resend of 4', from);
        await sleep(20);
        const resent = tester.segs.slice(from).filter((s) => c.fromDut(s) && s.len > 0);
        assert.ok(
          !resent.some((s) => s.seq === segs[7]!.seq),
          `7 not yet resent (the case needs a hole left for the partial ACK):\n${tester.dump()}`,
        );
        from = tester.segs.length;
        c.rcvNxt = end(segs[3]!);
        c.send({ flags: ACK, sack: [[segs[9]!.seq, end(segs[9]!)]], ts: ts() });
        const sent = await tester.collect((s) => c.fromDut(s) && s.len > 0, 300, from);
        const seqs = sent.map((s) => s.seq);
        assert.deepEqual(
          seqs.filter((q) => segs.some((s) => s.seq === q)),
          [],
          `nothing resent on the partial ACK:\n${tester.dump()}`,
        );
        assert.ok(seqs.length >= 1, `new data clocked out:\n${tester.dump()}`);
        c.rcvNxt = seqs.length > 0 ? end(sent.at(-1)!) : end(segs[9]!);
        c.send({ flags: ACK });
      });
    });

    test(`${v.name}: a recovery started by an ACK that SACKs three segments above seven lost, nothing else in flight, resends three: what the ACK delivered (Linux's tcp_cwnd_reduction, PRR; CUBIC on both)`, async () => {
      // Ten segments out; 7-9 arrive, 0-6 do not. The ACK that SACKs 7-9 starts a recovery
      // with nothing in flight (seven lost, three SACKed). Linux's PRR below ssthresh sends what
      // the ACK delivered, three, and tcp_xmit_retransmit_queue resends no more than cwnd -
      // in_flight: 0, 1 and 2. A first hole sent before PRR's step made it four. Within 150 ms:
      // the next ACK is the tester's, and no timer is due (RTO 3 s, no probe in recovery).
      await runCase(st, v, { rtoMinMs: 3000, congestion: 'cubic' }, async ({ dut, tester }) => {
        const { c, id } = await openConn(dut, tester, { ...FULL, window: 500 }, RTT_MS);
        dut.write(id, 30 * 988);
        const segs = await segments(c, 10);
        const ecr = segs[9]!.ts!.val;
        await waitUntil(segs[9]!.at + RTT_MS);
        const from = tester.segs.length;
        c.send({ flags: ACK, sack: [[segs[7]!.seq, end(segs[9]!)]], ts: { val: c.tsVal(), ecr } });
        const sent = await tester.collect((s) => c.fromDut(s) && s.len > 0, 150, from);
        assert.deepEqual(
          sent.map((s) => s.seq),
          segs.slice(0, 3).map((s) => s.seq),
          `0, 1 and 2 resent, nothing more:\n${tester.dump()}`,
        );
        c.rcvNxt = end(segs[9]!);
        c.send({ flags: ACK, ts: { val: c.tsVal(), ecr } });
      });
    });

    test(`${v.name}: no loss probe in recovery: a lost resend with nothing delivered after it waits for the timeout (Linux's tcp_schedule_loss_probe: Open and CWR only)`, async () => {
      // Ten segments, nothing more to send; the first is lost, the next three arrive: a recovery
      // resends the first. Then nothing more arrives. Linux probes only outside recovery, so
      // nothing goes before the RTO (3 s); a probe would resend the last segment 2 RTTs on.
      await runCase(st, v, { rtoMinMs: 3000 }, async ({ dut, tester }) => {
        const { c, id } = await openConn(dut, tester, { ...FULL, window: 500 }, RTT_MS);
        dut.write(id, 10 * 988);
        const segs = await segments(c, 10);
        await sleep(20);
        let from = tester.segs.length;
        c.send({ flags: ACK, sack: [[segs[1]!.seq, end(segs[3]!)]] });
        const rtx = await c.expect(
          (s) => s.len > 0 && s.seq === segs[0]!.seq,
          1000,
          'the fast retransmit',
          from,
        );
        from = rtx.n + 1;
        const sent = await tester.collect((s) => c.fromDut(s) && s.len > 0, 1200, from);
        assert.deepEqual(
          sent.map((s) => s.seq),
          [],
          `nothing sent before the timeout:\n${tester.dump()}`,
        );
        c.rcvNxt = end(segs[9]!);
        c.send({ flags: ACK });
      });
    });

    test(`${v.name}: after an ACK that reaches a resent probe and no further, no new probe until its episode ends (Linux's tlp_high_seq)`, async () => {
      // Two segments unanswered: the probe resends the second. The tester then ACKs both and no
      // more (not past the probe, no DSACK, not a pure duplicate): the probe's episode stays open.
      // Two new segments go unanswered: Linux sends no probe for them (tcp_send_loss_probe re-arms
      // the RTO while tlp_high_seq is set), so nothing goes before the RTO (3 s).
      await runCase(st, v, { rtoMinMs: 3000 }, async ({ dut, tester }) => {
        const { c, id } = await openConn(dut, tester, { ...FULL, window: 500 }, RTT_MS);
        const [, b] = await twoSegments(c, dut, id);
        await c.expect(
          (s) => s.len > 0 && s.seq === b.seq,
          2000,
          'the loss probe resending the second',
          b.n + 1,
        );
        await sleep(RTT_MS);
        c.rcvNxt = end(b);
        c.send({ flags: ACK });
        await sleep(20);
        const [, b2] = await twoSegments(c, dut, id);
        const sent = await tester.collect((s) => c.fromDut(s) && s.len > 0, 1200, b2.n + 1);
        assert.deepEqual(
          sent.map((s) => s.seq),
          [],
          `no probe for the new segments:\n${tester.dump()}`,
        );
        c.rcvNxt = end(b2);
        c.send({ flags: ACK });
      });
    });
  }

  test('tshark: no frame of any case is malformed or fails a checksum', () => st.checkCapture());
});
