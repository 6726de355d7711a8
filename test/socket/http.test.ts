import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { randomBytes, sha256 } from '../helpers/streams.ts';

/** `onSocket`: each socket the server accepts, before http has it. */
function setup(onSocket?: (s: TcpSocket) => void) {
  const net = new SimNetwork({ seed: 21, virtualTime: true });
  const client = net.addHost({ ip: '10.0.0.1/24' });
  const server = net.addHost({ ip: '10.0.0.2/24', impair: { loss: 0.01, delayMs: 1 } });
  const body = randomBytes(77, 5_000_000);
  const httpServer = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/blob') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      res.end(body);
      return;
    }
    if (req.method === 'POST' && req.url === '/sha256') {
      const h = createHash('sha256');
      req.on('data', (d) => h.update(d));
      req.on('end', () => res.end(h.digest('hex')));
      return;
    }
    res.writeHead(404).end();
  });
  const tcpServer = server.createServer((sock) => {
    onSocket?.(sock);
    httpServer.emit('connection', sock);
  });
  tcpServer.listen(80);
  return {
    net,
    client,
    body,
    close: () => {
      tcpServer.close();
      net.close();
    },
  };
}

/** GET /blob from `client`; resolves with the response and its body. */
function getBlob(
  client: ReturnType<typeof setup>['client'],
  headers: http.OutgoingHttpHeaders = {},
): Promise<{ res: http.IncomingMessage; got: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { createConnection: () => client.connect(80, '10.0.0.2') as never, path: '/blob', headers },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ res, got: Buffer.concat(parts) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe("Node's http on Chimney sockets", () => {
  test('GET of 5 MB arrives intact', async () => {
    const { client, body, close } = setup();
    const { res, got } = await getBlob(client);
    assert.equal(res.statusCode, 200);
    assert.equal(Number(res.headers['content-length']), body.length);
    assert.equal(sha256(got), sha256(body));
    close();
  });

  test("a closing response: the server's socket goes once the body is handed over; the body arrives whole", async () => {
    // Node's http server calls destroySoon after a last response: net.Socket ends and destroys
    // itself then, not at the client's FIN, and the kernel (here the connection) sends the rest.
    let serverClosedAt = -1;
    const { net, client, body, close } = setup((s) => s.on('close', () => (serverClosedAt = net.now())));
    const { got } = await getBlob(client, { connection: 'close' });
    const doneAt = net.now();
    assert.equal(sha256(got), sha256(body));
    assert.ok(
      serverClosedAt >= 0 && serverClosedAt < doneAt,
      `server socket closed at ${serverClosedAt}, body done at ${doneAt}`,
    );
    close();
  });

  test('POST of 4 MB is hashed by the server', async () => {
    const { client, close } = setup();
    const payload = randomBytes(5, 4_000_000);
    const answer = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        {
          createConnection: () => client.connect(80, '10.0.0.2') as never,
          method: 'POST',
          path: '/sha256',
          headers: { 'content-length': payload.length },
        },
        (res) => {
          let s = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (s += d));
          res.on('end', () => resolve(s));
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
    assert.equal(answer, sha256(payload));
    close();
  });
});
