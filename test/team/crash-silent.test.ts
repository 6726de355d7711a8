/**
 * A crashed NIC says nothing: its connections stop where they stand. Its crash releases each
 * connection for the salvage, and a hand-over's release sends a pending delayed ACK first (the
 * next owner's timer would send it late); the crash's must not, or the dead NIC's port carries
 * one ACK per such connection after it died. The rebuilt connection acknowledges what the dead
 * one received (its prod, and the ACK every rebuilt state owes), so nothing is lost.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Link } from '../../src/link/link.ts';
import type { SwitchPort } from '../../src/link/memory-switch.ts';
import { seqGeq } from '../../src/stack/tcp/seq.ts';
import { assertClean, runScenario } from './scenario.ts';
import { WrappedLink } from './team-sim.ts';

const CONNS = 40;

/** Sees the TCP segments the team's port 80 sends through a member's port, once `watching`. */
class WatchedLink extends WrappedLink {
  watching = false;
  segments = 0;
  /** The highest ACK sent to each peer port. */
  readonly acks = new Map<number, number>();
  constructor(inner: Link) {
    super(inner);
  }
  override send(f: Uint8Array): boolean {
    if (this.watching && f.length >= 14 + 20 + 20 && f[12] === 0x08 && f[13] === 0x00 && f[14 + 9] === 6) {
      const l4 = 14 + (f[14]! & 0x0f) * 4;
      const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
      if (v.getUint16(l4) === 80) {
        this.segments++;
        const port = v.getUint16(l4 + 2);
        const ack = v.getUint32(l4 + 8);
        const had = this.acks.get(port);
        if (had === undefined || seqGeq(ack, had)) this.acks.set(port, ack);
      }
    }
    return super.send(f);
  }
}

test('a crash sends no pending delayed ACK from the dead NIC; the rebuilt connection sends it', async () => {
  const links: WatchedLink[] = [];
  // The receive point of each connection that owed an ACK when its NIC died, by peer port.
  const owed = new Map<number, number>();
  const r = await runScenario({
    seed: 7,
    nics: 2,
    conns: CONNS,
    bytes: 60_000,
    batchSize: 8,
    rateBps: 2e7,
    faults: [{ at: 15, kind: 'crash', nic: 0 }],
    offloadTo: 0,
    // Every connection of the NIC past the quick ACKs of its start (tcp-ack-mode.ts), each
    // virtual millisecond until the crash, so an ACK of its data may wait.
    onStart: (rig) => {
      const t = rig.net.clock.createTimer(() => {
        for (const c of rig.nics[0]!.engine.tcp.connections()) c.state.soft.quickAcks = 0;
        if (!links[0]?.watching) t.arm(1);
      });
      t.arm(0);
    },
    wrapPort: (port: SwitchPort, i: number) => {
      const l = new WatchedLink(port);
      links[i] = l;
      return l;
    },
    onRig: (rig) => {
      const nic = rig.nics[0]!;
      const crash = nic.crash.bind(nic);
      nic.crash = (cause?: string) => {
        for (const c of nic.engine.tcp.connections()) {
          const s = c.state;
          if (s.soft.delayedAckDeadline !== Number.POSITIVE_INFINITY || s.soft.ackNow)
            owed.set(s.const.remotePort, s.delegated.rcvNxt);
        }
        for (const l of links) l.watching = true;
        crash(cause);
      };
      rig.team.on('failover', () => {
        links[0]!.watching = false;
      });
    },
  });
  assertClean(r);
  const f = r.rig.team.failovers.find((x) => x.nic === r.rig.nics[0]!.id);
  assert.ok(f, 'the member failed over');
  assert.equal(f.cause, 'dead');
  assert.equal(f.connections, CONNS);
  assert.ok(owed.size > 0, 'some connection owed a delayed ACK at the crash');
  assert.equal(
    links[0]!.segments,
    0,
    `${links[0]!.segments} segments left the dead NIC's port after its crash`,
  );
  for (const [port, rcvNxt] of owed) {
    const ack = links[1]!.acks.get(port);
    assert.ok(
      ack !== undefined && seqGeq(ack, rcvNxt),
      `stream ${port}: the rebuilt connection acknowledged what it held`,
    );
  }
});
