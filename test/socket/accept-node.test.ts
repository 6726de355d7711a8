/**
 * A TcpServer with no 'connection' listener behaves as Node's net.Server, checked against node:net
 * on loopback with the same script: every connection is accepted (beyond the backlog too, once
 * the clients resend their SYNs) and sits open and unread; a listener added later gets none of
 * them; closing the server leaves the accepted ones open, and they and the server stay open while
 * the clients' data sits unread.
 * One deliberate difference: a client's reset of a socket Node emitted to nobody is thrown as an
 * uncaught ECONNRESET (a peer could take the process down); Chimney ends only that socket.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { CLIENTS, type Sock, type Srv, script } from './accept-script.ts';

describe('TcpServer without a connection listener, against node:net', () => {
  const chimney = (reset: boolean) => {
    const sim = new SimNetwork({ seed: 9, virtualTime: true });
    const a = sim.addHost({ ip: '10.0.0.1/24' });
    const b = sim.addHost({ ip: '10.0.0.2/24' });
    return script(
      {
        server: b.createServer() as unknown as Srv,
        port: 8080,
        connect: (port) => a.connect(port, '10.0.0.2') as unknown as Sock,
        sleep: (ms) => sim.sleep(ms),
      },
      reset,
    ).finally(() => sim.close());
  };

  test('the same script gives the same answers on loopback and on Chimney', { timeout: 60_000 }, async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(new URL('./accept-node-ref.ts', import.meta.url))],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const guard = setTimeout(() => child.kill('SIGKILL'), 40_000);
    const [code] = (await once(child, 'exit')) as [number | null];
    clearTimeout(guard);
    assert.equal(code, 0, `the node:net reference run failed: ${out}`);
    const node = JSON.parse(out);
    assert.deepEqual(
      node,
      {
        connected: CLIENTS,
        accepted: CLIENTS,
        lateGot: 0,
        afterClose: CLIENTS,
        clientsClosedAfterServerClose: 0,
        closedEarly: false,
        afterEnd: CLIENTS,
        serverClosedAfterEnd: false,
      },
      'node:net (the reference) behaves as this test says',
    );
    assert.deepEqual(await chimney(false), node);
  });

  test("a client's reset ends only its own unread socket; nothing is thrown", async () => {
    assert.deepEqual(await chimney(true), {
      connected: CLIENTS,
      accepted: CLIENTS,
      lateGot: 0,
      afterClose: CLIENTS - 1,
      clientsClosedAfterServerClose: 0,
      closedEarly: false,
      afterEnd: CLIENTS - 1,
      serverClosedAfterEnd: false,
    });
  });
});
