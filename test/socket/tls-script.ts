/**
 * The cases test/socket/tls.test.ts runs: a tls.Server or https.Server on the sockets of a Side
 * (node-shape-sides.ts), its client a TLS socket over the same Side; each returns what the
 * server's TLS socket showed.
 */
import { once } from 'node:events';
import https from 'node:https';
import tls from 'node:tls';
import type { Side, Sock } from './node-shape-script.ts';
import { TEST_CERT, TEST_KEY } from './tls-keys.ts';

type Err = Error & { code?: string; errno?: number; syscall?: string };

async function until(side: Side, ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (ok()) return;
    await side.sleep(10);
  }
  throw new Error(`not reached: ${what}`);
}

/** Reset `raw` as soon as its TLS client has 50 kB: on virtual time a wait would let the rest in. */
function resetAfter(client: tls.TLSSocket, raw: Sock): void {
  let got = 0;
  client.on('data', (d: Buffer) => {
    got += d.length;
    if (got > 50_000 && !raw.destroyed) raw.resetAndDestroy();
  });
}

/** A TLS client over a socket of `side`, its handshake done. */
async function secureClient(side: Side, port: number): Promise<{ raw: Sock; client: tls.TLSSocket }> {
  const raw = side.connect(port, {});
  const client = tls.connect({ socket: raw, ca: TEST_CERT, servername: 'chimney.test' });
  client.on('error', () => {});
  await once(client, 'secureConnect');
  return { raw, client };
}

/**
 * A tls.Server's socket, its client (a TLS socket over `side` too) resetting mid-download or
 * after an upload, or ending.
 */
async function tlsServer(side: Side, what: 'download' | 'after upload' | 'end'): Promise<string[]> {
  const log: string[] = [];
  let read = 0;
  let closed = false;
  const server = tls.createServer({ key: TEST_KEY, cert: TEST_CERT }, (t) => {
    t.on('data', (d: Buffer) => (read += d.length));
    t.on('end', () => log.push(`end after ${read}`));
    t.on('finish', () => log.push('finish'));
    t.on('error', (e: Err) => log.push(`error ${e.code} ${e.errno} ${e.syscall}`));
    t.on('close', (hadError: boolean) => {
      log.push(`close hadError=${hadError}`);
      closed = true;
    });
    if (what === 'download') t.write(Buffer.alloc(2_000_000));
  });
  const listener = await side.listen({}, (p) => server.emit('connection', p));
  const { raw, client } = await secureClient(side, listener.port);
  if (what === 'end') client.end('bye');
  else if (what === 'download') resetAfter(client, raw);
  else {
    client.write(Buffer.alloc(100_000));
    // All of it read first: data and a reset that libuv reads together show as an end (see
    // node-shape.test.ts), and the reset is the point here.
    await until(side, () => read === 100_000, 'the upload read');
    raw.resetAndDestroy();
  }
  await until(side, () => closed, "the server's close");
  await side.sleep(100);
  listener.close();
  return log;
}

/** An https.Server's socket: its client resets mid-download, or takes a closing response whole. */
async function httpsServer(side: Side, what: 'reset' | 'close'): Promise<string[]> {
  const log: string[] = [];
  let closed = false;
  const server = https.createServer({ key: TEST_KEY, cert: TEST_CERT }, (req, res) => {
    req.socket.on('error', (e: Err) => log.push(`socket error ${e.code} ${e.errno} ${e.syscall}`));
    req.socket.on('close', (hadError: boolean) => {
      log.push(`socket close hadError=${hadError}`);
      closed = true;
    });
    res.on('close', () => log.push('response close'));
    // More than loopback's buffers hold: the reset finds the response still going.
    res.end(Buffer.alloc(what === 'reset' ? 40_000_000 : 1000));
  });
  const listener = await side.listen({}, (p) => server.emit('connection', p));
  const { raw, client } = await secureClient(side, listener.port);
  let got = 0;
  let ended = false;
  client.on('data', (d: Buffer) => (got += d.length));
  client.on('end', () => (ended = true));
  client.write(
    `GET / HTTP/1.1\r\nhost: chimney.test\r\n${what === 'close' ? 'connection: close\r\n' : ''}\r\n`,
  );
  if (what === 'reset') resetAfter(client, raw);
  await until(side, () => closed, "the server's socket closed");
  if (what === 'close') {
    await until(side, () => ended, "the client's end");
    log.push(`client got the response whole: ${got > 1000 && got < 2000}`);
  }
  await side.sleep(100);
  listener.close();
  return log;
}

export const CASES: Record<string, (side: Side) => Promise<string[]>> = {
  'tls.Server: the client resets mid-download': (side) => tlsServer(side, 'download'),
  'tls.Server: the client resets after an upload': (side) => tlsServer(side, 'after upload'),
  'tls.Server: the client ends': (side) => tlsServer(side, 'end'),
  'https.Server: the client resets mid-download': (side) => httpsServer(side, 'reset'),
  'https.Server: a closing response': (side) => httpsServer(side, 'close'),
};
