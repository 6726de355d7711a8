/**
 * A worker on a TypeScript entry starts from a bundle of its graph (src/nic/worker/spawn.ts), not
 * through tsx's loader hooks, and a bundle never outlives an edit of a file it was made from.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
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
