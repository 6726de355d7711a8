import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type ConnKey, connKeyId } from '../../src/nic/nic.ts';
import { EntryTable } from '../../src/offload/entry-table.ts';
import type { Entry } from '../../src/offload/transfer.ts';

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
