/**
 * The reference run of accept-script.ts on node:net over loopback, in a process of its own: the
 * unread sockets Node emitted to nobody cannot be reached to be closed, and would keep the test
 * process alive. Prints the answers as JSON and exits.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Sock, type Srv, script } from './accept-script.ts';

const r = await script(
  {
    server: net.createServer() as unknown as Srv,
    host: '127.0.0.1',
    connect: (port) => net.connect(port, '127.0.0.1') as unknown as Sock,
    sleep: (ms) => sleep(ms).then(() => undefined),
  },
  false,
);
process.stdout.write(`${JSON.stringify(r)}\n`);
process.exit(0);
