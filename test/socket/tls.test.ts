/**
 * Node's tls and https serving on Chimney's sockets, against the same serving on node:net: the
 * server's TLS socket shows the same events when its client ends, and the same error (code, errno,
 * syscall) when its client resets mid-transfer, with 'close' after it.
 *
 * Known differences, Node's own: tls runs a stream that is not a net.Socket through a
 * JSStreamSocket, which hears of the stream's failure only as an 'error' event (passed on as a
 * plain 'error' once the TLS socket is past its handshake; kept for 'tlsClientError' before, so a
 * TLS socket made without a tls.Server hears nothing but the 'close') and as its 'close' (a
 * destroy() without the error). Over a net.Socket the TLS layer reads the error itself and
 * destroys itself with it. So over any such stream the TLS socket's 'close' says hadError=false,
 * and an error listener that destroys the socket with the error, as https's does, makes the
 * 'error' show twice (node:net's own socket behind a plain Duplex shows both). A write of the TLS
 * socket's own under way at the reset fails with it: a second 'error' (syscall 'write'), then a
 * 'close' with hadError=true. The same three cases with Node's tls on the kernel as the client,
 * over a TAP in real time, showed the same events as here.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { chimneySide, nodeSide } from './node-shape-sides.ts';
import { CASES } from './tls-script.ts';

/** What Node showed over node:net on loopback (Node 20, Linux 6.18, load 20-25). */
const NODE: Record<string, string[]> = {
  'tls.Server: the client resets mid-download': ['error ECONNRESET -104 read', 'close hadError=true'],
  'tls.Server: the client resets after an upload': ['error ECONNRESET -104 read', 'close hadError=true'],
  'tls.Server: the client ends': ['end after 3', 'finish', 'close hadError=false'],
  'https.Server: the client resets mid-download': [
    'socket error ECONNRESET -104 read',
    'response close',
    'socket close hadError=true',
  ],
  'https.Server: a closing response': [
    'response close',
    'socket close hadError=false',
    'client got the response whole: true',
  ],
};

/** Where Chimney shows otherwise, for the reasons at the top. */
const OVER_A_STREAM: Record<string, string[]> = {
  'tls.Server: the client resets mid-download': [
    'error ECONNRESET -104 read',
    'error ECONNRESET -104 write',
    'close hadError=true',
  ],
  'tls.Server: the client resets after an upload': ['error ECONNRESET -104 read', 'close hadError=false'],
  'https.Server: the client resets mid-download': [
    'socket error ECONNRESET -104 read',
    'socket error ECONNRESET -104 read',
    'response close',
    'socket close hadError=true',
  ],
};

describe("Node's tls on Chimney sockets, against node:net", () => {
  for (const [name, run] of Object.entries(CASES)) {
    test(name, { timeout: 60_000 }, async () => {
      assert.deepEqual(await run(nodeSide), NODE[name], 'node:net (the reference) behaves as this test says');
      const side = chimneySide();
      try {
        assert.deepEqual(await run(side), OVER_A_STREAM[name] ?? NODE[name]);
      } finally {
        side.close();
      }
    });
  }
});
