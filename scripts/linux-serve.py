#!/usr/bin/env python3
"""
The Linux reference for scripts/soak-tap.ts --linux-server: the kernel's TCP serving the same
downloads as `chimney serve`'s HTTP service (`GET /bytes/N`, byte i = i mod 251, Content-Length,
Connection: close), from one asyncio process in its own namespace, with the same listen backlog
(4096, as src/cli/services.ts). Writes the body in chunks as the socket drains.

    python3 scripts/linux-serve.py --host 10.9.242.5 --port 80 [--ready-file F]
"""

import argparse
import asyncio
import os
import resource

PERIOD = 251
CHUNK = bytes(i % PERIOD for i in range(PERIOD * 261))  # 65,511 bytes, a whole number of periods


class Serve(asyncio.Protocol):
    def __init__(self):
        self.buf = b''
        self.transport = None
        self.left = 0
        self.off = 0
        self.paused = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        end = self.buf.find(b'\r\n\r\n')
        if end < 0:
            if len(self.buf) > 8192:
                self.transport.abort()
            return
        line = self.buf[: self.buf.find(b'\r\n')].decode('latin-1').split(' ')
        self.buf = b''
        n = -1
        if len(line) >= 2 and line[0] == 'GET' and line[1].startswith('/bytes/'):
            try:
                n = int(line[1][7:])
            except ValueError:
                n = -1
        if n < 0 or n > 1 << 30:
            self.transport.write(b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
            self.transport.close()
            return
        self.transport.write(f'HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n'.encode())
        self.left = n
        self.off = 0
        self.pump()

    def pump(self):
        # asyncio's flow control (pause_writing past 64 KB buffered) paces the body, so what waits
        # in user space per connection stays about one chunk, as a server with a sendfile loop.
        while self.left > 0 and not self.paused:
            k = min(self.left, len(CHUNK) - self.off)
            self.transport.write(CHUNK[self.off : self.off + k])
            self.left -= k
            self.off = (self.off + k) % len(CHUNK)
        if self.left == 0 and not self.closed:
            self.closed = True
            self.transport.close()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.pump()

    def connection_lost(self, exc):
        self.left = 0
        self.closed = True


async def main():
    p = argparse.ArgumentParser()
    p.add_argument('--host', required=True)
    p.add_argument('--port', type=int, default=80)
    p.add_argument('--backlog', type=int, default=4096)
    p.add_argument('--ready-file')
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard) if hard != resource.RLIM_INFINITY else 65536, hard))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Serve(), a.host, a.port, backlog=a.backlog, reuse_address=True)
    if a.ready_file:
        with open(a.ready_file, 'w') as f:
            f.write(str(os.getpid()))
    async with server:
        await server.serve_forever()


if __name__ == '__main__':
    asyncio.run(main())
