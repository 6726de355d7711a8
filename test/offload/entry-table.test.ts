import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type ConnKey, connKeyId } from '../../src/nic/nic.ts';
import { EntryTable } from '../../src/offload/entry-table.ts';
import type { Entry } from '../../src/offload/transfer.ts';
import { ConnTable } from '../../src/stack/tcp/conn-table.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';

// Few distinct values per field, so tuples repeat and share hash chains; IPv6 handles above 2^32.
const ip = fc.constantFrom(0x0a000001, 0x0a000002, 0xc0a80001, 2 ** 32 + 5, 2 ** 40 + 7);
const port = fc.constantFrom(1, 80, 443, 65535, 40000);
const key = fc.record({ localIp: ip, localPort: port, remoteIp: ip, remotePort: port });
const op = fc.record({ set: fc.boolean(), key });

test('the table of offloaded connections agrees with a map keyed by the tuple’s text, over 200 to 2000 operations', () => {
  fc.assert(
    fc.property(fc.array(op, { minLength: 200, maxLength: 2000 }), (ops) => {
      const t = new EntryTable();
      const ref = new Map<string, Entry>();
      for (const [i, o] of ops.entries()) {
        const k: ConnKey = { ...o.key };
        if (o.set) {
          const e = { key: k, nic: null as never, user: null, n: i } as Entry;
          t.set(e);
          ref.set(connKeyId(k), e);
        } else assert.equal(t.delete(k), ref.delete(connKeyId(k)));
        assert.equal(t.size, ref.size);
        assert.equal(t.get(k), ref.get(connKeyId(k)));
      }
      assert.deepEqual(new Set(t.values()), new Set(ref.values()));
    }),
    { numRuns: 30 },
  );
});

// Each op: tag or untag (the entry table), hold or unhold (the host's placeholder), run or stop
// (a LocalNic's connection, in a table sharing the host's store), all on the same few tuples.
const mixedOp = fc.record({ kind: fc.constantFrom('tag', 'untag', 'hold', 'unhold', 'run', 'stop'), key });

test('kept as tags in the host’s four-tuple table, entries, placeholders and a NIC’s connections of one tuple stay apart', () => {
  fc.assert(
    fc.property(fc.array(mixedOp, { minLength: 200, maxLength: 1000 }), (ops) => {
      const hostTable = new ConnTable();
      const nicTable = new ConnTable();
      assert.ok(nicTable.share(hostTable));
      const t = new EntryTable(hostTable);
      const tags = new Map<string, Entry>();
      const held = new Set<string>();
      const running = new Map<string, TcpConnection>();
      for (const [i, o] of ops.entries()) {
        const k: ConnKey = { ...o.key };
        const id = connKeyId(k);
        const tuple = [k.localIp, k.localPort, k.remoteIp, k.remotePort] as const;
        if (o.kind === 'tag') {
          const e = { key: k, nic: null as never, user: null, n: i } as Entry;
          t.set(e);
          tags.set(id, e);
        } else if (o.kind === 'untag') assert.equal(t.delete(k), tags.delete(id));
        else if (o.kind === 'hold') {
          hostTable.hold(...tuple);
          held.add(id);
        } else if (o.kind === 'unhold')
          assert.equal(hostTable.unhold(...tuple) !== undefined, held.delete(id));
        else if (o.kind === 'run' && !running.has(id)) {
          const c = { state: { const: { ...k } }, tableEntry: null } as unknown as TcpConnection;
          nicTable.add(c);
          running.set(id, c);
        } else if (o.kind === 'stop') {
          const c = running.get(id);
          if (c !== undefined) assert.ok(nicTable.remove(c));
          running.delete(id);
        }
        assert.equal(t.get(k), tags.get(id));
        assert.equal(hostTable.placeholder(...tuple) !== undefined, held.has(id));
        assert.equal(nicTable.lookup(...tuple), running.get(id));
        assert.equal(hostTable.lookup(...tuple), undefined, 'the host runs none of them');
        assert.equal(nicTable.placeholder(...tuple), undefined, 'the NIC holds none of them');
        assert.deepEqual([t.size, hostTable.heldSize, nicTable.size], [tags.size, held.size, running.size]);
      }
      assert.deepEqual(new Set(t.values()), new Set(tags.values()));
      assert.deepEqual(new Set(nicTable.connections()), new Set(running.values()));
    }),
    { numRuns: 30 },
  );
});
