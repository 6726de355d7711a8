/**
 * Conformance: opening and closing. Each case runs against the Linux kernel and against Chimney
 * (see harness.ts) and asserts the same answer from both.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ACK,
  accepted,
  Conn,
  type Dut,
  FIN,
  freshIss,
  freshPort,
  has,
  RST,
  runCase,
  SYN,
  seqAdd,
  seqGt,
  suite,
  VARIANTS,
} from './harness.ts';

const st = suite('cfh', 31);

/** The DUT closes first and the tester completes the close, leaving the DUT in TIME_WAIT. */
async function dutClosesFirst(dut: Dut, c: Conn, id: number): Promise<void> {
  dut.close(id);
  const fin = await c.expect((s) => has(s, FIN), 5000, 'FIN from the DUT');
  c.rcvNxt = seqAdd(fin.seq, 1);
  const from = c.tester.segs.length;
  c.data(0, FIN | ACK);
  await c.expect((s) => has(s, ACK) && s.ack === c.sndNxt, 5000, 'last ACK (TIME_WAIT)', from);
}

/**
 * A new SYN on the connection's four-tuple, 100,000 above its old sequence space and with a newer
 * timestamp (what RFC 6191 lets reopen a TIME_WAIT). Returns the arrival mark before it.
 */
function newSyn(c: Conn): number {
  const from = c.tester.segs.length;
  c.send({
    seq: seqAdd(c.sndNxt, 100_000),
    ack: 0,
    flags: SYN,
    mss: 1000,
    ts: { val: c.tsVal() + 10, ecr: 0 },
  });
  return from;
}

describe('conformance: handshake and close', { skip: st.skip, timeout: 120_000 }, () => {
  before(() => st.setup());
  after(() => st.teardown());

  for (const v of VARIANTS) {
    test(`${v.name}: SYN-ACK answers each offered option and only those (RFC 9293 3.2, RFC 7323, RFC 2018)`, async () => {
      await runCase(st, v, {}, async ({ dut, tester }) => {
        const port = freshPort();
        await dut.listen(port);
        const full = new Conn(
          tester,
          freshPort(),
          port,
          { mss: 1000, wscale: 7, sack: true, ts: true },
          freshIss(),
        );
        const sa = await full.open();
        assert.equal(sa.ack, seqAdd(full.sndNxt, 0), 'SYN-ACK acknowledges our SYN');
        // The link's MTU (1500) less the IP and TCP headers: 40 bytes over IPv4, 60 over IPv6.
        assert.equal(sa.mss, 1500 - tester.headerBytes, 'MSS from the link MTU and the family');
        assert.ok(sa.wscale >= 0 && sa.wscale <= 14, `window scale answered (${sa.wscale})`);
        assert.ok(sa.sackPermitted, 'SACK-permitted answered');
        assert.ok(sa.ts, 'timestamps answered');
        assert.ok(sa.ts.ecr >= 1000 && sa.ts.ecr < 1000 + 5000, `TSecr echoes our TSval (${sa.ts.ecr})`);

        // A SYN with no options: the answer carries none of the negotiated ones (RFC 7323 2.2,
        // 3.2: window scale and timestamps only if the SYN had them; RFC 2018: SACK likewise).
        const bare = new Conn(tester, freshPort(), port, {}, freshIss());
        const sb = await bare.open();
        assert.equal(sb.wscale, -1, 'no window scale without one offered');
        assert.equal(sb.sackPermitted, false, 'no SACK-permitted without one offered');
        assert.equal(sb.ts, null, 'no timestamps without them offered');
        // The window in a SYN-ACK is never scaled (RFC 7323 2.2).
        assert.ok(sb.window > 0 && sb.window <= 65535);

        // The accepted connections carry data: the handshake completed on both.
        await dut.event((e) => e.ev === 'accepted', 5000, 'two accepts');
        full.data(100);
        await full.expect((s) => has(s, ACK) && s.ack === full.sndNxt, 3000, 'ACK of 100 bytes');
      });
    });

    test(`${v.name}: simultaneous open (RFC 9293 3.5, figure 8)`, async () => {
      await runCase(st, v, {}, async ({ dut, tester, testerIp }) => {
        const tport = freshPort();
        const lport = freshPort();
        const c = new Conn(tester, tport, lport, { mss: 1000, ts: true, sack: true, wscale: 7 }, freshIss());
        dut.connect(testerIp, tport, lport);
        const syn = await c.expect((s) => s.flags === SYN, 10_000, 'SYN from the DUT');
        c.dutIss = syn.seq;
        c.tsRecent = syn.ts?.val ?? 0;
        // Our own SYN crosses theirs: the DUT must answer SYN-ACK with its first ISS.
        const from = tester.segs.length;
        c.send({ flags: SYN, ack: 0, mss: 1000, wscale: 7, sackPermitted: true });
        c.sndNxt = seqAdd(c.sndNxt, 1);
        const sa = await c.expect((s) => has(s, SYN | ACK), 5000, 'SYN-ACK in SYN-RECEIVED', from);
        assert.equal(sa.seq, syn.seq, 'the SYN-ACK repeats the SYN\u2019s sequence number');
        assert.equal(sa.ack, c.sndNxt, 'and acknowledges our SYN');
        // Our SYN-ACK completes the open on the DUT.
        c.rcvNxt = seqAdd(syn.seq, 1);
        c.dutWscale = Math.max(syn.wscale, 0);
        c.send({ flags: SYN | ACK, seq: seqAdd(c.sndNxt, -1), mss: 1000, wscale: 7, sackPermitted: true });
        const ev = await dut.event((e) => e.ev === 'connected', 5000, 'connected');
        dut.write((ev as { id: number }).id, 10);
        const d = await c.expect((s) => s.len === 10, 5000, 'data after simultaneous open');
        assert.equal(d.seq, c.rcvNxt);
        assert.equal(d.ack, c.sndNxt);
      });
    });

    test(`${v.name}: simultaneous close passes through CLOSING (RFC 9293 3.6, figure 13)`, async () => {
      await runCase(st, v, {}, async ({ dut, tester }) => {
        const port = freshPort();
        await dut.listen(port);
        const c = new Conn(tester, freshPort(), port, { mss: 1000, ts: true }, freshIss());
        await c.open();
        const acc = await dut.event((e) => e.ev === 'accepted', 5000, 'accept');
        dut.shutdown((acc as { id: number }).id);
        const fin = await c.expect((s) => has(s, FIN), 5000, 'FIN from the DUT');
        assert.equal(fin.seq, c.rcvNxt);
        // Our FIN crosses theirs: it does not acknowledge their FIN.
        const from = tester.segs.length;
        c.data(0, FIN | ACK);
        const a = await c.expect((s) => has(s, ACK) && s.ack === c.sndNxt, 5000, 'ACK of our FIN', from);
        assert.equal(a.seq, seqAdd(fin.seq, 1), 'the ACK follows the FIN (CLOSING)');
        assert.ok(!has(a, RST));
        // Now acknowledge their FIN: TIME_WAIT. A retransmission of our FIN is re-acknowledged there.
        c.rcvNxt = seqAdd(fin.seq, 1);
        c.send({ flags: ACK });
        const from2 = tester.segs.length;
        c.send({ flags: FIN | ACK, seq: seqAdd(c.sndNxt, -1) });
        const again = await c.expect(
          (s) => has(s, ACK),
          5000,
          'ACK of the retransmitted FIN in TIME_WAIT',
          from2,
        );
        assert.equal(again.ack, c.sndNxt);
        assert.ok(!has(again, RST) && !has(again, FIN));
      });
    });

    test(`${v.name}: a SYN in TIME_WAIT reopens only for a listener, above the old sequence space (RFC 6191, RFC 9293 3.6.1)`, async () => {
      await runCase(st, v, {}, async ({ dut, tester }) => {
        const port = freshPort();
        await dut.listen(port);
        const c = new Conn(tester, freshPort(), port, { mss: 1000, ts: true }, freshIss());
        await c.open();
        const acc = await dut.event(accepted, 5000, 'accept');
        dut.write(acc.id, 500);
        await c.receive(500, 5000);
        await dutClosesFirst(dut, c, acc.id);
        const oldSndNxt = c.rcvNxt;
        const sa = await c.expect((s) => has(s, SYN | ACK), 5000, 'SYN-ACK from TIME_WAIT', newSyn(c));
        assert.equal(sa.ack, seqAdd(c.sndNxt, 100_001));
        assert.ok(seqGt(sa.seq, oldSndNxt), `new ISS ${sa.seq} above the old snd.nxt ${oldSndNxt}`);
        c.send({ seq: seqAdd(c.sndNxt, 100_001), flags: RST });

        // Without a listener, TIME_WAIT is not ended by a SYN: no SYN-ACK.
        const p2 = freshPort();
        await dut.listen(p2);
        const d = new Conn(tester, freshPort(), p2, { mss: 1000, ts: true }, freshIss());
        await d.open();
        const acc2 = await dut.event((e) => accepted(e) && e.port === p2, 5000, 'accept 2');
        await dut.unlisten(p2);
        await dutClosesFirst(dut, d, (acc2 as { id: number }).id);
        const f4 = newSyn(d);
        const answers = await tester.collect(d.fromDut, 1000, f4);
        assert.ok(!answers.some((s) => has(s, SYN)), 'no SYN-ACK without a listener');
        // Linux answers with the TIME_WAIT ACK (tcp_v4_rcv, TCP_TW_SYN falling through to
        // TCP_TW_ACK); an ACK or silence keeps the old incarnation's rules, a RST would not.
        assert.ok(!answers.some((s) => has(s, RST)), 'no RST from TIME_WAIT');
      });
    });
  }

  test('tshark: no frame of any case, on either family, is malformed or fails a checksum', () =>
    st.checkCapture());
});
