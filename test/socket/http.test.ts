import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { randomBytes, sha256 } from '../helpers/streams.ts';

function setup() {
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
  const tcpServer = server.createServer((sock) => httpServer.emit('connection', sock));
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

describe("Node's http on Chimney sockets", () => {
  test('GET of 5 MB arrives intact', async () => {
    const { client, body, close } = setup();
    const got = await new Promise<Buffer>((resolve, reject) => {
      const req = http.request(
        { createConnection: () => client.connect(80, '10.0.0.2') as never, path: '/blob' },
        (res) => {
          assert.equal(res.statusCode, 200);
          assert.equal(Number(res.headers['content-length']), body.length);
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal(sha256(got), sha256(body));
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
