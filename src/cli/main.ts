import { Command, Option } from 'commander';
import { DEMO_DEFAULTS, type DemoProgress, runDemo } from './demo.ts';
import { byteSize, intIn, nonNegative, probability } from './options.ts';
import { registerTapCommands } from './serve.ts';
import { registerStatusCommand } from './status.ts';
import { runWebDemo } from './web-demo.ts';

const program = new Command();
program
  .name('chimney')
  .description(
    'A TCP/IP stack whose live connections move between the host and software NICs, and survive link failure.',
  )
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (str, write) => write(`chimney: ${str}`) });

program
  .command('demo')
  .description(
    'stream data over many TCP connections through an impaired simulated link and verify every byte',
  )
  .addOption(
    new Option('-c, --connections <n>', 'number of connections')
      .argParser(intIn(1, 100_000))
      .default(DEMO_DEFAULTS.connections),
  )
  .addOption(
    new Option('-b, --bytes <size>', 'bytes per connection and direction (e.g. 1MiB)')
      .argParser(byteSize)
      .default(DEMO_DEFAULTS.bytes, '1MiB'),
  )
  .addOption(
    new Option('--loss <p>', 'loss probability on the server link (0..1 or %)')
      .argParser(probability)
      .default(DEMO_DEFAULTS.impair.loss),
  )
  .addOption(
    new Option('--duplicate <p>', 'duplication probability')
      .argParser(probability)
      .default(DEMO_DEFAULTS.impair.duplicate),
  )
  .addOption(
    new Option('--reorder <p>', 'reordering probability')
      .argParser(probability)
      .default(DEMO_DEFAULTS.impair.reorder),
  )
  .addOption(
    new Option('--delay <ms>', 'one-way delay in ms')
      .argParser(nonNegative)
      .default(DEMO_DEFAULTS.impair.delayMs),
  )
  .addOption(
    new Option('--jitter <ms>', 'delay jitter in ms')
      .argParser(nonNegative)
      .default(DEMO_DEFAULTS.impair.jitterMs),
  )
  .addOption(
    new Option('--cc <algorithm>', 'congestion control').choices(['cubic', 'newreno']).default('cubic'),
  )
  .addOption(
    new Option('--seed <n>', 'seed for the simulated network')
      .argParser(intIn(0, 2 ** 31 - 1))
      .default(DEMO_DEFAULTS.seed),
  )
  .addOption(
    new Option('--nics <n>', "NICs in the server's team (0: no offload, no failover)")
      .argParser(intIn(0, 16))
      .default(DEMO_DEFAULTS.nics),
  )
  .addOption(
    new Option(
      '--failover-at <share>',
      'cut the busiest NIC once this share of the bytes has arrived (0: never)',
    )
      .argParser(probability)
      .default(DEMO_DEFAULTS.failoverAt),
  )
  .option('--json', 'print the summary as one JSON object')
  .option('--web', 'serve a live view of the simulated network in a browser instead (runs until Ctrl-C)')
  .addOption(
    new Option('--port <n>', 'port of the --web page (on 127.0.0.1)')
      .argParser(intIn(0, 65535))
      .default(8080),
  )
  .action(async (o) => {
    if (o.web)
      return runWebDemo({
        port: o.port,
        connections: o.connections === DEMO_DEFAULTS.connections ? 12 : o.connections,
        nics: o.nics,
        seed: o.seed,
      });
    const live = !o.json && process.stderr.isTTY;
    let eventsShown = 0;
    const show = (p: DemoProgress): void => {
      // Failover events get a line of their own, above the live progress line.
      for (; eventsShown < p.events.length; eventsShown++) {
        if (!o.json) process.stderr.write(`${live ? '\r\x1b[K' : ''}${p.events[eventsShown]}\n`);
      }
      const pct = p.totalBytes ? ((100 * p.bytes) / p.totalBytes).toFixed(1) : '0';
      const rate = p.simMs > 0 ? ((p.bytes * 8) / (p.simMs * 1000)).toFixed(1) : '0';
      const own = Object.entries(p.owners)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k.replace(/^server\./, '')} ${n}`)
        .join(', ');
      const line = `sim ${(p.simMs / 1000).toFixed(2)}s  conns ${p.connected}/${p.connections} up, ${p.finished} done [${own}]  bytes ${pct}%  ${rate} Mbit/s  rtx ${p.retransmits}`;
      if (live) process.stderr.write(`\r${line.padEnd(110)}`);
      else if (!o.json) process.stderr.write(`${line}\n`);
    };
    let lastShown = 0;
    const summary = await runDemo(
      {
        connections: o.connections,
        bytes: o.bytes,
        seed: o.seed,
        congestion: o.cc,
        impair: {
          loss: o.loss,
          duplicate: o.duplicate,
          reorder: o.reorder,
          delayMs: o.delay,
          jitterMs: o.jitter,
        },
        timeLimitMs: DEMO_DEFAULTS.timeLimitMs,
        nics: o.nics,
        failoverAt: o.failoverAt,
      },
      (p) => {
        // Progress lines are throttled by wall time so the display stays readable at any speed.
        const now = performance.now();
        if (now - lastShown < (live ? 100 : 1000)) return;
        lastShown = now;
        show(p);
      },
    );
    if (live) process.stderr.write('\n');
    if (o.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } else {
      const mb = (summary.bytes / 1e6).toFixed(1);
      console.log(`connections   ${summary.connections}`);
      console.log(`bytes         ${summary.bytes} (${mb} MB, both directions)`);
      console.log(
        `verified      ${summary.verified ? 'yes: every byte matched its SHA-256' : `NO: ${summary.mismatches} connections failed`}`,
      );
      console.log(`resets        ${summary.resets}`);
      console.log(`retransmits   ${summary.retransmits}`);
      console.log(
        `sim time      ${(summary.durationMs / 1000).toFixed(2)} s (${summary.goodputMbps} Mbit/s goodput), wall ${(summary.wallMs / 1000).toFixed(2)} s`,
      );
      console.log(
        `impairments   ${JSON.stringify(summary.impairments)}, seed ${summary.seed}, ${summary.congestion}`,
      );
      for (const f of summary.failovers) {
        console.log(
          `failover      ${f.nic} (${f.cause}): ${f.connections} connections moved, detected in ${f.detectMs.toFixed(1)} ms, data at the client again ${f.resumeMs.toFixed(1)} ms after detection (moves charged at their real time: ${f.resumeWallMs.toFixed(1)} ms wall)`,
        );
      }
    }
    process.exitCode = summary.verified ? 0 : 1;
  });

program
  .command('bench')
  .description('run benchmarks (sim); see BENCHMARKS.md')
  .argument(
    '[names...]',
    "benchmarks to run (default: all), then the flags of the one named (e.g. 'tap-team --faults crash --runs 3')",
  )
  .option('--json', 'print results as JSON')
  // A benchmark's own flags are its own (bench/run.ts hands them to it and says which are wrong).
  .allowUnknownOption()
  .action(async (names: string[], o) => {
    // The benchmarks live beside the sources, not in the package: a specifier the compiler does not
    // follow keeps them out of the build, and an installed package says where to find them.
    const suite = new URL('../../bench/run.ts', import.meta.url).href;
    const mod = (await import(suite).catch(() => null)) as {
      runBenchmarks(names: string[], o: { json: boolean }): Promise<number>;
    } | null;
    if (mod === null) {
      process.stderr.write('chimney bench: the benchmarks run from a source checkout (npm run bench)\n');
      process.exitCode = 1;
      return;
    }
    process.exitCode = await mod.runBenchmarks(names, { json: Boolean(o.json) });
  });

registerTapCommands(program);
registerStatusCommand(program);

await program.parseAsync(process.argv);
