/**
 * The test command's reporter: Node's own (TAP off a terminal, as CI reads it; spec on one), then
 * the wall time of each test file, slowest first, as TAP comments. A CI run that is slow shows in
 * its tail which files took the time, which the summary's one total does not.
 */
import { Readable } from 'node:stream';
import { spec, tap } from 'node:test/reporters';

const SHOWN = 25;

export default async function* fileTimes(source) {
  const per = new Map();
  async function* noted() {
    for await (const ev of source) {
      if ((ev.type === 'test:pass' || ev.type === 'test:fail') && ev.data.nesting === 0) {
        const f = ev.data.file ?? '(unknown file)';
        per.set(f, (per.get(f) ?? 0) + (ev.data.details?.duration_ms ?? 0));
      }
      yield ev;
    }
  }
  if (process.stdout.isTTY) yield* Readable.from(noted()).compose(new spec());
  else yield* tap(noted());
  const rows = [...per].sort((a, b) => b[1] - a[1]).slice(0, SHOWN);
  const cwd = `${process.cwd()}/`;
  yield `# slowest test files (top-level tests' wall time):\n`;
  for (const [f, ms] of rows) yield `#   ${(ms / 1000).toFixed(1).padStart(7)} s  ${f.replace(cwd, '')}\n`;
}
