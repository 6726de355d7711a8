import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { InvalidStateError } from '../../src/core/errors.ts';
import { offloadPair } from './helpers.ts';

describe('an OffloadManager that was closed', () => {
  test('a transfer queued behind a running one does not start: its connection stays in the host', async () => {
    const { net, host, peer } = offloadPair(3);
    peer.createServer((s) => s.resume()).listen(80);
    const a = host.connect(80, '10.0.0.2');
    const b = host.connect(80, '10.0.0.2');
    await Promise.all([once(a, 'connect'), once(b, 'connect')]);
    const m = host.offload;
    m.liveHandover = false;
    // Closed while the first transfer runs (at its initiate), with the second queued behind it.
    const nic = host.nics[0]!;
    const initiate = nic.initiate.bind(nic);
    nic.initiate = (...args: Parameters<typeof initiate>) => {
      m.close();
      return initiate(...args);
    };
    const first = m.offload([a.connection!], nic);
    const second = m.offload([b.connection!], host.nics[1]!);
    await first;
    await assert.rejects(second, InvalidStateError);
    const c = b.connection!;
    assert.ok(
      host.stack.tcp.lookup(c.localIp, c.localPort, c.remoteIp, c.remotePort),
      'still run by the host',
    );
    assert.equal(host.nics[1]!.load, 0);
    a.destroy();
    b.destroy();
    net.close();
  });
});
