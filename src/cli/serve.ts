/**
 * `chimney serve` and `chimney get`: Chimney on a real TAP device, as a server of echo, discard and
 * HTTP, and as an HTTP client.
 *
 * Several TAPs: `--tap a,b` (or --tap repeated) is refused for now with a message saying why. Two
 * interfaces with one IP would answer ARP twice and split connections at random; several TAPs only
 * make sense as one team with failover, which gives them one address and moves connections.
 */

import { createWriteStream } from 'node:fs';
import http from 'node:http';
import { type Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { ChimneyError } from '../core/errors.ts';
import { ControlServer } from './control.ts';
import { intIn } from './options.ts';
import { parseService, type RunningService, type ServiceSpec, startService } from './services.ts';
import { StatusReporter } from './status.ts';
import { checkTapHostOptions, createTapHost, type TapHost, type TapHostOptions } from './tap-host.ts';

/** Connections get this long to finish after SIGINT/SIGTERM before they are aborted. */
const SHUTDOWN_GRACE_MS = 1000;

function collectTaps(v: string, prev: string[] | undefined): string[] {
  const names = v
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  if (names.length === 0) throw new CommanderArgError(`'${v}' names no TAP device`);
  return [...(prev ?? []), ...names];
}

function collectService(v: string, prev: ServiceSpec[] | undefined): ServiceSpec[] {
  let spec: ServiceSpec;
  try {
    spec = parseService(v);
  } catch (e) {
    throw new CommanderArgError((e as Error).message);
  }
  const all = prev ?? [];
  if (all.some((s) => s.port === spec.port)) throw new CommanderArgError(`port ${spec.port} is used twice`);
  return [...all, spec];
}

/** The TAP / address options `serve` and `get` share. */
function addTapOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--tap <names>', 'TAP device (created if missing); repeatable or comma-separated')
        .argParser(collectTaps)
        .makeOptionMandatory(),
    )
    .requiredOption('--ip <addr/prefix>', "Chimney's address, e.g. 10.9.0.10/24")
    .option('--gw <addr>', 'default gateway')
    .option('--mac <mac>', "Chimney's MAC (default 02:00 + the IP address)")
    .option('--pcap <file>', 'capture every frame to this pcap file')
    .addOption(new Option('--mtu <n>', 'set the TAP MTU').argParser(intIn(576, 65521)))
    .option('--no-offload', 'do not use segmentation and checksum offload')
    .option(
      '--impair <spec>',
      "loss/reordering/delay made in Chimney's link, e.g. loss=1%,reorder=1%,delay=2",
    );
}

interface TapFlags {
  tap: string[];
  ip: string;
  gw?: string;
  mac?: string;
  pcap?: string;
  mtu?: number;
  offload: boolean;
  impair?: string;
}

function fail(cmd: string, msg: string): never {
  process.stderr.write(`chimney ${cmd}: ${msg}\n`);
  process.exit(1);
}

function openHost(cmd: string, o: TapFlags): TapHost {
  if (o.tap.length > 1) {
    fail(
      cmd,
      `--tap: ${o.tap.join(',')}: several TAPs with one address need teaming with failover, which is not built yet; give one TAP`,
    );
  }
  const opts: TapHostOptions = {
    tap: o.tap[0]!,
    ip: o.ip,
    gw: o.gw,
    mac: o.mac,
    mtu: o.mtu,
    pcap: o.pcap,
    offload: o.offload,
    impair: o.impair,
  };
  try {
    checkTapHostOptions(opts);
    return createTapHost(opts);
  } catch (e) {
    if (e instanceof ChimneyError) fail(cmd, `${e.message}${e.code.startsWith('E') ? ` (${e.code})` : ''}`);
    fail(cmd, `${(e as Error).message}`);
  }
}

export function registerTapCommands(program: Command): void {
  const serve = program
    .command('serve')
    .description('run Chimney on a TAP device and serve echo, discard and http');
  addTapOptions(serve)
    .option(
      '--service <name[:port]>',
      'echo[:7], discard[:9], http[:80]; repeatable (default: all three)',
      collectService,
    )
    .option('-q, --quiet', 'do not log connections (errors are still logged)')
    .option('--control <path>', 'control socket for `chimney status` (default /run/chimney/<tap>.sock)')
    .action((o: TapFlags & { service?: ServiceSpec[]; quiet?: boolean; control?: string }) => runServe(o));

  const get = program
    .command('get')
    .description('fetch an http:// URL over Chimney on a TAP device; the body goes to stdout')
    .argument('<url>', 'http://a.b.c.d[:port]/path (an IPv4 address, no DNS)');
  addTapOptions(get)
    .option('-o, --output <file>', 'write the body to this file instead of stdout')
    .addOption(
      new Option('--timeout <ms>', 'give up when nothing arrives for this long')
        .argParser(intIn(1, 3_600_000))
        .default(10_000),
    )
    .action((url: string, o: TapFlags & { output?: string; timeout: number }) => runGet(url, o));
}

function runServe(o: TapFlags & { service?: ServiceSpec[]; quiet?: boolean; control?: string }): void {
  const specs = o.service ?? [
    { name: 'echo', port: 7 },
    { name: 'discard', port: 9 },
    { name: 'http', port: 80 },
  ];
  const th = openHost('serve', o);
  const log = {
    info: (line: string) => {
      if (!o.quiet) process.stderr.write(`chimney: ${line}\n`);
    },
    error: (line: string) => process.stderr.write(`chimney: error: ${line}\n`),
  };
  const running: RunningService[] = specs.map((s) => startService(th.host, s, log));
  th.tap.onCarrier((up) => log.error(`${th.tap.name}: carrier ${up ? 'up' : 'down'}`));
  const reporter = new StatusReporter(th.stack, `chimney serve on ${th.tap.name}`, {
    listeners: () => specs.map((s) => `${s.name}:${s.port}`),
  });
  let control: ControlServer | null = null;
  const controlPath = o.control ?? `/run/chimney/${th.tap.name}.sock`;
  try {
    control = new ControlServer(controlPath, () => reporter.snapshot());
    control.onError = (e) => log.error(`control socket ${controlPath}: ${e.message}`);
  } catch (e) {
    log.error(
      `control socket ${controlPath}: ${(e as Error).message} (chimney status will not reach this server)`,
    );
  }
  const off = th.tap.offloads;
  const offloads = !o.offload ? 'off' : off.tso ? 'tso+csum' : off.csum ? 'csum' : 'none';
  process.stdout.write(
    `chimney: serving ${specs.map((s) => `${s.name}:${s.port}`).join(' ')} on ${th.tap.name} ${o.ip} (offload ${offloads})\n`,
  );
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${sig}: closing`);
    for (const r of running) r.close();
    control?.close();
    const deadline = Date.now() + SHUTDOWN_GRACE_MS;
    const wait = (): void => {
      if (running.some((r) => r.open > 0) && Date.now() < deadline) {
        setTimeout(wait, 20);
        return;
      }
      for (const r of running) r.destroyAll();
      // Let the resets and FINs leave before the TAP goes.
      setImmediate(() => {
        th.close();
        process.exit(0);
      });
    };
    wait();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

function runGet(url: string, o: TapFlags & { output?: string; timeout: number }): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    fail('get', `'${url}' is not a URL`);
  }
  if (u.protocol !== 'http:') fail('get', `${url}: only http:// is supported`);
  const hostname = u.hostname;
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(hostname)) {
    fail('get', `${url}: the host must be an IPv4 address (Chimney has no DNS resolver)`);
  }
  const th = openHost('get', o);
  const port = u.port === '' ? 80 : Number(u.port);
  let done = false;
  const finish = (code: number, msg?: string): void => {
    if (done) return;
    done = true;
    if (msg) process.stderr.write(`chimney get: ${msg}\n`);
    th.close();
    const exit = (): void => process.exit(code);
    if (out === process.stdout) process.stdout.write('', exit);
    else out.end(exit);
  };
  const out: NodeJS.WritableStream =
    o.output !== undefined ? createWriteStream(o.output) : (process.stdout as NodeJS.WritableStream);
  out.on('error', (e: Error) => finish(1, `${o.output ?? 'stdout'}: ${e.message}`));
  const req = http.request(
    {
      method: 'GET',
      host: hostname,
      port,
      path: `${u.pathname}${u.search}`,
      headers: { host: u.host, 'user-agent': 'chimney-get' },
      createConnection: () => th.host.connect({ port, host: hostname }) as never,
      timeout: o.timeout,
    },
    (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 400) {
        res.resume();
        finish(1, `${url}: HTTP ${status} ${res.statusMessage ?? ''}`.trimEnd());
        return;
      }
      res.on('error', (e) => finish(1, `${url}: ${e.message}`));
      res.on('aborted', () => finish(1, `${url}: connection closed before the body was complete`));
      res.pipe(out as NodeJS.WritableStream, { end: false });
      res.on('end', () => {
        if (!res.complete) finish(1, `${url}: connection closed before the body was complete`);
        else finish(0);
      });
    },
  );
  req.on('timeout', () => {
    req.destroy(new Error(`no data for ${o.timeout} ms`));
  });
  req.on('error', (e: Error & { code?: string }) => finish(1, `${url}: ${e.message}`));
  req.end();
}
