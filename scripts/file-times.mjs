/**
 * The test command's reporter: Node's own (TAP off a terminal, as CI reads it; spec on one), then
 * the wall time of each test file, slowest first, and last every failed test with its place and
 * error, as TAP comments. A CI run is often read only by its tail: a slow one shows there which
 * files took the time, and a failed one which test failed and why, which the summary's counts do not.
 */
import { Readable } from 'node:stream';
import { spec, tap } from 'node:test/reporters';

const SHOWN = 15;
/** Lines of a failure's message kept in the tail; the whole stays in the TAP above. */
const ERROR_LINES = 6;

export default async function* fileTimes(source) {
  const per = new Map();
  const failed = [];
  async function* noted() {
    for await (const ev of source) {
      // A suite fails when a test in it does; the test itself is the useful line.
      if (ev.type === 'test:fail' && ev.data.details?.type !== 'suite') failed.push(ev.data);
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
  if (failed.length === 0) return;
  yield `# failed tests (${failed.length}):\n`;
  for (const t of failed) {
    const where = `${(t.file ?? '(unknown file)').replace(cwd, '')}:${t.line ?? '?'}`;
    yield `#   ${where}  ${t.name}\n`;
    const err = t.details?.error;
    const text = String(err?.cause?.message ?? err?.message ?? err ?? '');
    for (const line of text.split('\n').slice(0, ERROR_LINES)) yield `#       ${line}\n`;
  }
}
