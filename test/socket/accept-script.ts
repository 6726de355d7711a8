/**
 * The script test/socket/accept-node.test.ts runs against node:net (in a child process:
 * accept-node-ref.ts) and against Chimney: a server with no 'connection' listener.
 */
export const CLIENTS = 10;
const BACKLOG = 2;

/** What the script needs of either implementation. */
export interface Sock {
  on(ev: 'connect' | 'close' | 'error', fn: (...a: unknown[]) => void): unknown;
  write(s: string): unknown;
  resume(): unknown;
  end(): unknown;
  resetAndDestroy(): unknown;
}
export interface Srv {
  listen(o: { port: number; host?: string; backlog: number }): unknown;
  address(): { port: number } | string | null;
  on(ev: 'connection' | 'listening' | 'close', fn: (...a: unknown[]) => void): unknown;
  getConnections(cb: (e: Error | null, n: number) => void): unknown;
  close(): unknown;
}
export interface Side {
  server: Srv;
  host?: string;
  /** 0: any free port (Node); Chimney takes a fixed one. */
  port?: number;
  connect(port: number): Sock;
  sleep(ms: number): Promise<void>;
}

async function until(side: Side, ok: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await ok()) return;
    await side.sleep(50);
  }
  throw new Error(`not reached: ${what}`);
}

export async function script(side: Side, reset: boolean) {
  const { server } = side;
  const conns = (): Promise<number> => new Promise((r) => server.getConnections((_e, n) => r(n)));
  const listening = new Promise((r) => server.on('listening', r));
  server.listen({ port: side.port ?? 0, host: side.host, backlog: BACKLOG });
  await listening;
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  const socks: Sock[] = [];
  let connected = 0;
  let closed = 0;
  for (let i = 0; i < CLIENTS; i++) {
    const s = side.connect(port);
    s.on('error', () => {});
    s.on('connect', () => {
      connected++;
      s.write('hello');
    });
    s.on('close', () => closed++);
    socks.push(s);
  }
  await until(side, () => connected === CLIENTS, 'every client connected');
  await until(side, async () => (await conns()) === CLIENTS, 'every connection accepted');
  const accepted = await conns();
  let lateGot = 0;
  server.on('connection', () => lateGot++);
  await side.sleep(100);
  if (reset) {
    socks[0]!.resetAndDestroy();
    await until(side, async () => (await conns()) === CLIENTS - 1, 'the reset one let go');
  }
  const gone = reset ? 1 : 0;
  let serverClosed = false;
  server.on('close', () => {
    serverClosed = true;
  });
  server.close();
  await side.sleep(200);
  const afterClose = await conns();
  const clientsClosedAfterServerClose = closed - gone;
  const closedEarly = serverClosed;
  for (const s of socks.slice(gone)) {
    s.resume();
    s.end();
  }
  // The server's sockets hold the clients' unread 'hello': they do not end at the FIN (a stream
  // ends once read to its end), so neither they nor the server close, in Node as in Linux.
  await side.sleep(300);
  return {
    connected,
    accepted,
    lateGot,
    afterClose,
    clientsClosedAfterServerClose,
    closedEarly,
    afterEnd: await conns(),
    serverClosedAfterEnd: serverClosed,
  };
}
