import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Start a worker thread on a TypeScript entry module.
 *
 * Under Node 20, `execArgv: ['--import', 'tsx']` does not reach a worker's entry module: the
 * loader hooks registered by `--import` are not in place when the worker resolves its entry, and
 * it fails with ERR_UNKNOWN_FILE_EXTENSION. What works is a tiny bootstrap that registers tsx's
 * ESM hooks from inside the worker and then imports the entry. The hooks module is resolved here,
 * from this file, so the worker finds it whatever the process's working directory.
 * A `.js`/`.mjs` entry (a compiled build) starts directly.
 */
export function spawnWorker(entry: URL, opts: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, opts);
  // import.meta.resolve is missing when this file itself was compiled to CommonJS.
  const api =
    typeof import.meta.resolve === 'function'
      ? import.meta.resolve('tsx/esm/api')
      : pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api')).href;
  const boot = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(boot, { ...opts, eval: true });
}
