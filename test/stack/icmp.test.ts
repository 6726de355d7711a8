import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnectionError } from '../../src/core/errors.ts';
import type { IcmpErrorInfo } from '../../src/stack/ip-sender.ts';
import { parseIpv4 } from '../../src/wire/addr.ts';
import { etherType, IP_A, IP_B, icmpMessage, ipFrame, MAC_A, MAC_B, twoHosts, udpFrame } from './harness.ts';

function icmpFrames(w: ReturnType<typeof twoHosts>, from: string) {
  return w.hub.log.filter((e) => e.from === from && etherType(e.frame) === 0x0800 && e.frame[23] === 1);
}

/** The IP header + 8 bytes A would have sent to B with the given protocol and ports. */
function quoteOf(
  protocol: number,
  srcPort: number,
  dstPort: number,
  seq = 0,
  totalLength = 1500,
): Uint8Array {
  const f = ipFrame({
    dstMac: MAC_B,
    srcMac: MAC_A,
    src: IP_A,
    dst: IP_B,
    protocol,
    payload: new Uint8Array(8),
  });
  const q = f.slice(14, 14 + 28);
  q[2] = totalLength >>> 8;
  q[3] = totalLength & 0xff;
  q[20] = srcPort >>> 8;
  q[21] = srcPort & 0xff;
  q[22] = dstPort >>> 8;
  q[23] = dstPort & 0xff;
  q[24] = seq >>> 24;
  q[25] = (seq >>> 16) & 0xff;
  q[26] = (seq >>> 8) & 0xff;
  q[27] = seq & 0xff;
  return q;
}

function fromB(w: ReturnType<typeof twoHosts>, msg: Uint8Array): void {
  w.pa.receive(ipFrame({ dstMac: MAC_A, srcMac: MAC_B, src: IP_B, dst: IP_A, protocol: 1, payload: msg }));
}

describe('ICMP', () => {
  test('echo: replies carry the same id, seq and data', async () => {
    const w = twoHosts();
    const p = w.a.ping('10.0.0.2', { size: 100 });
    w.clock.advance(5);
    assert.ok((await p).rttMs >= 0);
    const [req] = icmpFrames(w, 'a');
    const [rep] = icmpFrames(w, 'b');
    assert.equal(req!.frame[34], 8);
    assert.equal(rep!.frame[34], 0);
    assert.deepEqual(rep!.frame.subarray(38), req!.frame.subarray(38), 'id, seq, data');
  });

  test('ping times out and validates its arguments', async () => {
    const w = twoHosts();
    w.b.close();
    const p = w.a.ping('10.0.0.2', { timeoutMs: 200 });
    const r = assert.rejects(p, { code: 'ETIMEDOUT' });
    w.clock.advance(250);
    await r;
    await assert.rejects(w.a.ping('10.0.0.300'), { code: 'ERR_CHIMNEY_INVALID_ARG' });
    await assert.rejects(w.a.ping('10.0.0.2', { size: -1 }), { code: 'ERR_CHIMNEY_INVALID_ARG' });
    await assert.rejects(w.a.ping('8.8.8.8'), { code: 'ENETUNREACH' });
  });

  test('ping to our own address is looped back', async () => {
    const w = twoHosts();
    const p = w.a.ping('10.0.0.1');
    w.clock.advance(1);
    await p;
    assert.equal(w.hub.log.length, 0, 'nothing on the wire');
    assert.equal(w.a.counters.get('tx.ipv4.loopback'), 2);
  });

  test('UDP to a closed port: port unreachable → ECONNREFUSED at the sender', () => {
    const w = twoHosts();
    const errors: { e: ConnectionError; port: number }[] = [];
    const s = w.a.udp.bind(
      {},
      () => {},
      (e, about) => errors.push({ e, port: about.port }),
    );
    s.send(new Uint8Array([1, 2, 3]), 9999, '10.0.0.2');
    w.clock.advance(5);
    assert.equal(w.b.counters.get('drop.udp.no-port'), 1);
    const [err] = icmpFrames(w, 'b');
    assert.equal(err!.frame[34], 3);
    assert.equal(err!.frame[35], 3);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.e.code, 'ECONNREFUSED');
    assert.equal(errors[0]!.port, 9999);
  });

  test('protocol unreachable for an unknown protocol', () => {
    const w = twoHosts();
    w.pb.receive(
      ipFrame({
        dstMac: MAC_B,
        srcMac: MAC_A,
        src: IP_A,
        dst: IP_B,
        protocol: 99,
        payload: new Uint8Array(12),
      }),
    );
    w.clock.advance(5);
    assert.equal(w.b.counters.get('drop.ipv4.unknown-protocol'), 1);
    const [err] = icmpFrames(w, 'b');
    assert.equal(err!.frame[34], 3);
    assert.equal(err!.frame[35], 2);
  });

  test('no errors about broadcasts, about ICMP errors, and never faster than the rate limit', () => {
    const w = twoHosts({ icmp: { errorBurst: 5, errorRatePerSec: 10 } });
    const bcast = (dst: number, dstMac: number) =>
      udpFrame({
        dstMac,
        srcMac: MAC_A,
        src: IP_A,
        dst,
        srcPort: 5,
        dstPort: 9999,
        payload: new Uint8Array(4),
      });
    w.pb.receive(bcast(parseIpv4('10.0.0.255'), 0xffffffffffff));
    w.pb.receive(bcast(IP_B, 0xffffffffffff));
    w.pb.receive(bcast(0xffffffff, 0xffffffffffff));
    // An ICMP error with an unknown protocol inside still must not trigger an error in reply.
    w.pb.receive(
      ipFrame({
        dstMac: MAC_B,
        srcMac: MAC_A,
        src: IP_A,
        dst: IP_B,
        protocol: 1,
        payload: icmpMessage(3, 1, new Uint8Array(4)),
      }),
    );
    w.clock.advance(5);
    assert.equal(icmpFrames(w, 'b').length, 0);
    assert.equal(w.b.counters.get('drop.udp.no-port'), 3);
    for (let i = 0; i < 20; i++) w.pb.receive(bcast(IP_B, MAC_B));
    w.clock.advance(5);
    assert.equal(icmpFrames(w, 'b').length, 5);
    assert.equal(w.b.counters.get('icmp.tx.rate-limited'), 15);
    w.clock.advance(1000); // 10 more tokens
    for (let i = 0; i < 20; i++) w.pb.receive(bcast(IP_B, MAC_B));
    w.clock.advance(5);
    assert.equal(icmpFrames(w, 'b').length, 10);
  });

  test('frag-needed lowers the shared path MTU (never below 552) until it expires', () => {
    const w = twoHosts();
    const path = w.a.pathTo(IP_B)!;
    const errs: IcmpErrorInfo[] = [];
    w.a.tcp.icmpError = (e: IcmpErrorInfo) => errs.push(e);
    fromB(w, icmpMessage(3, 4, quoteOf(6, 40000, 80, 12345), 1200));
    assert.equal(path.cached.mtu, 1200);
    assert.equal(w.a.pathTo(IP_B), path);
    assert.equal(errs.length, 1);
    assert.deepEqual(errs[0], {
      kind: 'frag-needed',
      code: 4,
      mtu: 1200,
      src: IP_A,
      dst: IP_B,
      srcPort: 40000,
      dstPort: 80,
      seq: 12345,
      mtuLowered: true,
    });
    fromB(w, icmpMessage(3, 4, quoteOf(6, 40000, 80), 1400));
    assert.equal(path.cached.mtu, 1200, 'only ever lowered');
    fromB(w, icmpMessage(3, 4, quoteOf(6, 40000, 80), 100));
    assert.equal(path.cached.mtu, 552);
    assert.equal(errs[2]!.mtu, 552);
    // UDP now leaves in 552-byte packets.
    w.a.udp.bind({}, () => {}).send(new Uint8Array(1000), 7, IP_B);
    w.clock.advance(5);
    const sent = w.hub.log.filter(
      (e) => e.from === 'a' && etherType(e.frame) === 0x0800 && e.frame[23] === 17,
    );
    assert.equal(sent.length, 2);
    for (const s of sent) assert.ok(s.frame.length - 14 <= 552);
    w.clock.advance(10 * 60 * 1000);
    assert.equal(path.cached.mtu, 1500);
  });

  test('frag-needed without an MTU (RFC 1191 plateau); errors not about our packets are dropped', () => {
    const w = twoHosts();
    const path = w.a.pathTo(IP_B)!;
    fromB(w, icmpMessage(3, 4, quoteOf(17, 1, 2, 0, 1500), 0));
    assert.equal(path.cached.mtu, 1492);
    const foreign = quoteOf(17, 1, 2);
    foreign[12] = 10;
    foreign[15] = 99; // source 10.0.0.99 is not ours
    fromB(w, icmpMessage(3, 4, foreign, 600));
    assert.equal(w.a.counters.get('drop.icmp.not-ours'), 1);
    fromB(w, icmpMessage(3, 4, new Uint8Array(10), 600));
    assert.equal(w.a.counters.get('drop.icmp.bad-quote'), 1);
    const bad = icmpMessage(3, 4, quoteOf(17, 1, 2), 600);
    bad[2]! ^= 1;
    fromB(w, bad);
    assert.equal(w.a.counters.get('drop.icmp.bad-checksum'), 1);
    assert.equal(path.cached.mtu, 1492);
  });
});
