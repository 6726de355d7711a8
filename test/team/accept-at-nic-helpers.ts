/** Helpers of the accept-at-nic tests: a payload whose misplaced bytes show, and an echo client. */
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';

/** Bytes 0..n-1 of a pattern a misplaced or repeated segment would show. */
export function pattern(n: number, salt: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + salt + (i >> 11)) & 0xff;
  return b;
}

type Client = Pick<TcpSocket, 'on' | 'write'>;

/** Send `out` on `c`: `done` once as many bytes came back, `got()` what did, `n()` how many so far. */
export function echo(c: Client, out: Buffer) {
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve) => {
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= out.length) resolve();
    });
  });
  c.on('error', () => {});
  c.write(out);
  return { done, got: () => Buffer.concat(got), n: () => n };
}
