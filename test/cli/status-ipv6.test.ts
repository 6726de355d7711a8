/**
 * `chimney status` of a host with IPv6: its addresses with their state, IPv6 connections as
 * [addr]:port under the neighbor they go through, next to IPv4 ones. Two hosts on the simulator.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatStatus } from '../../src/cli/control.ts';
import { StatusReporter } from '../../src/cli/status.ts';
import { connected, pair } from '../ipv6/helpers.ts';

test('status shows IPv6 addresses and connections beside IPv4 ones', async () => {
  const { net, a, b } = pair(91);
  const srv = b.createServer((s) => s.on('error', () => {}));
  srv.listen(80);
  const c6 = a.connect(80, 'fd00::2');
  const c4 = a.connect(80, '10.0.0.2');
  await Promise.all([connected(c6), connected(c4)]);
  const s = await new StatusReporter(b.stack, 'b').snapshot();
  assert.ok(s.addresses.includes('10.0.0.2/24'), s.addresses.join(' '));
  assert.ok(s.addresses.includes('fd00::2/64'), s.addresses.join(' '));
  assert.ok(
    s.addresses.some((x) => /^fe80::[0-9a-f:]+\/64$/.test(x)),
    `the link-local address, usable: ${s.addresses.join(' ')}`,
  );
  const conns = s.trees.flatMap((nb) => nb.paths.flatMap((p) => p.conns.map((c) => ({ nb: nb.ip, p, c }))));
  const v6 = conns.find((x) => x.c.remote === `[fd00::1]:${c6.localPort}`);
  assert.ok(v6, JSON.stringify(conns.map((x) => x.c.remote)));
  assert.equal(v6.c.local, '[fd00::2]:80');
  assert.equal(v6.c.state, 'ESTABLISHED');
  assert.equal(v6.nb, 'fd00::1', 'an on-link peer is its own neighbor');
  assert.equal(v6.p.remote, 'fd00::1');
  const v4 = conns.find((x) => x.c.remote === `10.0.0.1:${c4.localPort}`);
  assert.ok(v4, JSON.stringify(conns.map((x) => x.c.remote)));
  assert.equal(v4.c.local, '10.0.0.2:80');
  const text = formatStatus(s);
  assert.match(text, /\[fd00::2\]:80/);
  assert.match(text, /fd00::2\/64/);
  c6.destroy();
  c4.destroy();
  srv.close();
  net.close();
});
