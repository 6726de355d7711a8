import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLog, INFO_BURST_LINES, INFO_WINDOW_MS } from '../../src/cli/log.ts';
import { startService } from '../../src/cli/services.ts';
import { VirtualClock } from '../../src/core/clock.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';

function capture() {
  const sink = new PassThrough();
  let text = '';
  sink.setEncoding('utf8').on('data', (d) => {
    text += d;
  });
  return { sink, lines: () => text.split('\n').filter((l) => l !== '') };
}

test('--log-format json: one JSON object per event, connection open and close with bytes', async () => {
  const { sink, lines } = capture();
  const log = createLog('json', { destination: sink });
  const simnet = new SimNetwork({ seed: 2 });
  const a = simnet.addHost({ ip: '10.0.0.1/24' });
  const b = simnet.addHost({ ip: '10.0.0.2/24' });
  const svc = startService(b, { name: 'echo', port: 7 }, log);
  const sock = a.connect(7, '10.0.0.2');
  sock.on('data', () => {});
  sock.end(Buffer.alloc(1234, 1));
  await new Promise((r) => sock.on('close', r));
  await new Promise((r) => setTimeout(r, 50));
  log.event('failover x', { event: 'failover', nic: 'tap1', cause: 'carrier', detectMs: 1.5 });
  log.error('bad thing', { event: 'carrier', up: false });
  svc.close();
  simnet.close();

  const objs = lines().map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(objs.every((o) => typeof o.msg === 'string' && typeof o.pid === 'number'));
  assert.ok(
    objs.every((o) => !Number.isNaN(Date.parse(String(o.time)))),
    'ISO times',
  );
  const open = objs.find((o) => o.event === 'connection-open');
  const close = objs.find((o) => o.event === 'connection-close');
  assert.equal(open?.service, 'echo:7');
  assert.match(String(open?.peer), /^10\.0\.0\.1:\d+$/);
  assert.equal(close?.bytesIn, 1234);
  assert.equal(close?.bytesOut, 1234);
  assert.deepEqual(
    objs.filter((o) => o.event === 'failover').map((o) => [o.level, o.nic, o.cause, o.detectMs]),
    [['info', 'tap1', 'carrier', 1.5]],
  );
  assert.equal(objs.find((o) => o.event === 'carrier')?.level, 'error');
});

test('quiet drops connection lines but keeps events; human format is the plain line', () => {
  const j = capture();
  const quiet = createLog('json', { quiet: true, destination: j.sink });
  quiet.info('conn', { event: 'connection-open' });
  quiet.event('moved 3', { event: 'move', moved: 3 });
  assert.deepEqual(
    j.lines().map((l) => (JSON.parse(l) as { event: string }).event),
    ['move'],
  );
  const h = capture();
  const human = createLog('human', { destination: h.sink });
  human.info('echo:7: connection from 10.0.0.1:5000', { event: 'connection-open' });
  human.error('oops');
  assert.deepEqual(h.lines(), ['chimney: echo:7: connection from 10.0.0.1:5000', 'chimney: error: oops']);
});

test('a burst of connection lines: INFO_BURST_LINES per window shown, the rest summed up in one line at its end', () => {
  const clock = new VirtualClock();
  const j = capture();
  const log = createLog('json', { destination: j.sink, clock });
  const burst = 2000;
  for (let i = 0; i < burst; i++) {
    log.info(`conn ${i}`, { event: i % 2 === 0 ? 'connection-open' : 'connection-close' });
    if (i % 100 === 0) clock.advance(1);
  }
  log.event('failover x', { event: 'failover' });
  const objs = () => j.lines().map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(objs().filter((o) => String(o.msg).startsWith('conn ')).length, INFO_BURST_LINES);
  assert.equal(objs().filter((o) => o.event === 'failover').length, 1, 'events are never held');
  clock.advance(INFO_WINDOW_MS);
  const sums = objs().filter((o) => o.event === 'log-burst');
  assert.equal(sums.length, 1, 'one line for the burst');
  assert.equal(sums[0]!.suppressed, burst - INFO_BURST_LINES);
  assert.deepEqual(sums[0]!.byEvent, {
    'connection-open': (burst - INFO_BURST_LINES) / 2,
    'connection-close': (burst - INFO_BURST_LINES) / 2,
  });
  // A later connection, after the burst, is shown again.
  log.info('conn late', { event: 'connection-open' });
  assert.equal(objs().at(-1)!.msg, 'conn late');
  clock.advance(10 * INFO_WINDOW_MS);
  assert.equal(objs().filter((o) => o.event === 'log-burst').length, 1, 'nothing more to sum up');
});
