/**
 * A worker on a TypeScript entry starts from a bundle of its graph (src/nic/worker/spawn.ts), not
 * through tsx's loader hooks, a bundle never outlives an edit of a file it was made from, and an
 * old bundle is removed once no running process uses it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { bundleFor, spawnWorker } from '../../src/nic/worker/spawn.ts';

/** A scratch graph: an entry that posts what its import says, and where its code runs from. */
function scratchGraph(t: { after(fn: () => void): void }): { dir: string; entry: URL } {
  const dir = mkdtempSync(join(tmpdir(), 'chimney-spawn-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'dep.ts'), "export const said: string = 'first';\n");
  writeFileSync(
    join(dir, 'entry.ts'),
    [
      "import { parentPort } from 'node:worker_threads';",
      "import { said } from './dep.ts';",
      // The first frame of a stack names the file the code was loaded from.
      "const at: string = new Error().stack?.split('\\n')[1] ?? '';",
      'parentPort!.postMessage({ said, at, meta: import.meta.url });',
      '',
    ].join('\n'),
  );
  return { dir, entry: pathToFileURL(join(dir, 'entry.ts')) };
}

async function answer(w: Worker): Promise<{ said: string; at: string; meta: string }> {
  try {
    const [m] = await once(w, 'message');
    return m;
  } finally {
    await w.terminate();
  }
}

test('a worker on a .ts entry runs its code from a bundle, and import.meta.url still names the entry', async (t) => {
  const { entry } = scratchGraph(t);
  const m = await answer(spawnWorker(entry));
  assert.equal(m.said, 'first');
  assert.match(m.at, /\.mjs:\d+:\d+\)?$/, `loaded from a bundle, not from the source: ${m.at}`);
  assert.ok(!m.at.includes('entry.ts'), m.at);
  // Package lookups (createRequire(import.meta.url) in tap-sys) start where the source lies.
  assert.equal(m.meta, entry.href);
});

test('a bundle is reused while its inputs are unchanged, and made again when one of them is edited', async (t) => {
  const { dir, entry } = scratchGraph(t);
  const cache = join(dir, 'cache');
  const first = bundleFor(entry, cache);
  assert.ok(first, 'esbuild (with tsx) is in a source checkout');
  assert.equal(bundleFor(entry, cache)?.href, first.href, 'same inputs, same bundle');
  assert.equal((await answer(new Worker(first))).said, 'first');

  writeFileSync(join(dir, 'dep.ts'), "export const said: string = 'second';\n");
  const second = bundleFor(entry, cache);
  assert.ok(second);
  assert.notEqual(second.href, first.href, 'an edited import makes a new bundle');
  assert.equal((await answer(new Worker(second))).said, 'second');
});

test('a bundle no index names is removed once no running process marked it; one in use stays', (t) => {
  const { dir, entry } = scratchGraph(t);
  const cache = join(dir, 'cache');
  const running = new Set([1001, 1002]);
  let now = Date.now();
  const use = (pid: number) => ({ pid, alive: (p: number) => running.has(p), now: () => now });
  const edit = (said: string) =>
    writeFileSync(join(dir, 'dep.ts'), `export const said: string = '${said}';\n`);
  const path = (u: URL | null) => fileURLToPath(u!);

  const first = bundleFor(entry, cache, use(1001));
  assert.ok(first, 'esbuild (with tsx) is in a source checkout');
  edit('second');
  const second = bundleFor(entry, cache, use(1002));
  assert.notEqual(second?.href, first.href);
  assert.ok(existsSync(path(first)), 'the old bundle stays while the process that uses it runs');

  running.delete(1001);
  edit('third');
  const third = bundleFor(entry, cache, use(1002));
  // A process of a Chimney that marks nothing may have started from it within the hour.
  assert.ok(existsSync(path(first)), 'an unmarked bundle stays an hour after it was made');
  now += 2 * 3_600_000;
  assert.equal(bundleFor(entry, cache, use(1002))?.href, third?.href, 'same inputs, same bundle');
  assert.ok(!existsSync(path(first)), 'then goes, its process gone');
  assert.ok(existsSync(path(second)), 'another running process still uses this one');
  assert.ok(existsSync(path(third)));

  running.delete(1002);
  running.add(1003);
  assert.equal(bundleFor(entry, cache, use(1003))?.href, third?.href, 'same inputs, same bundle');
  const left = readdirSync(cache).sort();
  assert.deepEqual(
    left.filter((n) => n.endsWith('.mjs')),
    [path(third).split('/').pop()],
    `only the current bundle is left: ${left.join(', ')}`,
  );
  assert.deepEqual(
    left.filter((n) => n.endsWith('.use')),
    [`${path(third).split('/').pop()}.1003.use`],
    "the gone processes' marks went with them",
  );
});

test('an unmarked bundle made long ago is kept an hour from when its index last named it', (t) => {
  const { dir, entry } = scratchGraph(t);
  const cache = join(dir, 'cache');
  // 1001 is gone, or a Chimney from before the marks: nothing marks the bundle it started from.
  const running = new Set([1002]);
  let now = Date.now();
  const use = (pid: number) => ({ pid, alive: (p: number) => running.has(p), now: () => now });
  const first = bundleFor(entry, cache, use(1001));
  assert.ok(first, 'esbuild (with tsx) is in a source checkout');
  // Made two hours ago, and named by its index (so reused) until the edit below.
  const made = new Date(now - 2 * 3_600_000);
  utimesSync(fileURLToPath(first), made, made);
  writeFileSync(join(dir, 'dep.ts'), "export const said: string = 'second';\n");
  const second = bundleFor(entry, cache, use(1002));
  assert.notEqual(second?.href, first.href);
  // Before: its own mtime counted, and it went at once.
  assert.ok(existsSync(fileURLToPath(first)), 'kept: its index named it a moment ago');
  now += 2 * 3_600_000;
  assert.equal(bundleFor(entry, cache, use(1002))?.href, second?.href, 'same inputs, same bundle');
  assert.ok(!existsSync(fileURLToPath(first)), 'gone an hour after its index named another');
});
