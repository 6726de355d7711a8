import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Start a worker thread on an entry module.
 *
 * A `.js`/`.mjs` entry (a compiled build) starts directly. A `.ts` entry (a source checkout: the
 * tests, the benchmarks, `npm run chimney`) starts from a bundle of its import graph made by
 * esbuild (tsx's own compiler) and kept on disk: one plain ES module, no loader hooks. Through
 * tsx each worker registers tsx's hooks (module.register) and resolves and loads each of its ~80
 * modules through them: at load 40-55 on 2 cores a NIC worker took 4.3-7.5 s to evaluate its graph
 * that way, 1.7-3.0 s from a bundle, 0.4-1.8 s for an empty worker (BENCHMARKS.md, "A worker's
 * start from a source checkout").
 *
 * When the bundle cannot be made (esbuild missing, a build error), or CHIMNEY_WORKER_TSX=1 is set,
 * the worker starts through tsx as before.
 */
export function spawnWorker(entry: URL, opts: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, opts);
  const bundled = process.env.CHIMNEY_WORKER_TSX === '1' ? null : workerBundle(entry);
  if (bundled !== null) return new Worker(bundled, opts);
  return new Worker(tsxBoot(entry), { ...opts, eval: true });
}

/**
 * Under Node 20, `execArgv: ['--import', 'tsx']` does not reach a worker's entry module: the
 * loader hooks registered by `--import` are not in place when the worker resolves its entry, and
 * it fails with ERR_UNKNOWN_FILE_EXTENSION. What works is a tiny bootstrap that registers tsx's
 * ESM hooks from inside the worker and then imports the entry. The hooks module is resolved here,
 * from this file, so the worker finds it whatever the process's working directory.
 */
function tsxBoot(entry: URL): string {
  // import.meta.resolve is missing when this file itself was compiled to CommonJS.
  const api =
    typeof import.meta.resolve === 'function'
      ? import.meta.resolve('tsx/esm/api')
      : pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api')).href;
  return `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
}

/** What spawnWorker uses of esbuild's API. */
interface Esbuild {
  version: string;
  buildSync(o: Record<string, unknown>): {
    outputFiles: { path: string; text: string }[];
    metafile: { inputs: Record<string, unknown> };
  };
}

/** What a bundle was made from: each input's path (absolute) and the hash of its text. */
interface BundleIndex {
  file: string;
  inputs: Record<string, string>;
}

const BUNDLE_DIR = join(tmpdir(), `chimney-workers-${process.getuid?.() ?? 'u'}`);

/** This process's bundles, by entry URL (checked once; the sources do not change under a run). */
const bundles = new Map<string, URL | null>();

/**
 * The URL of a fresh bundle of `entry`'s graph, or null when none can be made. A bundle is reused
 * across processes while every file it was made from hashes the same (reading and hashing ~1.3 MB
 * costs a few ms; the build itself 0.1 s quiet, 2-3.5 s at load 45), so an edited source is never
 * run from a stale bundle. Each bundle's file is named by its own hash and its index is replaced
 * by rename, so processes that build at once never read a torn or mismatched pair.
 *
 * Packages stay outside the bundle (`packages: 'external'`); the one package a worker loads,
 * koffi, is found through createRequire(import.meta.url) in tap-sys. A bundle lies in the temp
 * directory, so `import.meta.url` is defined as the entry's URL: a package lookup from there
 * finds the project's node_modules, as from any of its modules.
 */
function workerBundle(entry: URL): URL | null {
  const known = bundles.get(entry.href);
  if (known !== undefined) return known;
  let url: URL | null = null;
  try {
    url = bundleFor(entry);
  } catch {
    url = null;
  }
  bundles.set(entry.href, url);
  return url;
}

/** Who uses a bundle: this process, whether a process of that id still runs, and the time. */
export interface BundleUse {
  pid: number;
  alive(pid: number): boolean;
  /** Wall-clock ms (file times are compared with it). */
  now(): number;
}

const OWN_USE: BundleUse = { pid: process.pid, alive: pidAlive, now: Date.now };

/**
 * An old bundle no process marked stays this long after it was last named: a process of a
 * Chimney from before the marks (which marks nothing) may have started from it while its index
 * named it. The later of its own mtime and its index's counts (the index's is when it named
 * another bundle): a bundle made long ago may have been reused until a moment ago.
 */
const UNMARKED_KEEP_MS = 60 * 60 * 1000;

/** The use marks this process left (markUse), removed as it exits. */
const useMarks: string[] = [];

function dropUseMarks(): void {
  for (const m of useMarks) rmQuiet(m);
}

/**
 * A bundle of `entry`'s graph in `dir`: the one there if every input still hashes the same, else a
 * new one. Null without esbuild; a build error throws.
 *
 * Each edit of a source makes a new bundle (about 1 MB) and leaves the old one: the bundles no
 * index names any more are removed here (sweep), unless a process that still runs uses one. A
 * serve started before the edit keeps starting its workers (a restart, hours later) from the
 * bundle it began with, which matches the code its main thread runs; so each process marks the
 * bundle it uses (`<bundle>.<pid>.use`, removed at its exit) before it reads or writes it, and
 * checks it is still there once marked: a sweep that ran in between made it build again.
 */
export function bundleFor(entry: URL, dir = BUNDLE_DIR, use: BundleUse = OWN_USE): URL | null {
  const esbuild = loadEsbuild();
  if (esbuild === null) return null;
  const key = hashOf(`${entry.href}\0${esbuild.version}\0${process.version}`).slice(0, 16);
  const indexPath = join(dir, `${key}.json`);
  const cached = readIndex(indexPath);
  if (cached !== null && upToDate(cached)) {
    markUse(join(dir, cached.file), use);
    if (existsSync(join(dir, cached.file))) {
      sweep(dir, use);
      return pathToFileURL(join(dir, cached.file));
    }
  }

  const cwd = fileURLToPath(new URL('.', entry));
  const out = esbuild.buildSync({
    entryPoints: [fileURLToPath(entry)],
    absWorkingDir: cwd,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    define: { 'import.meta.url': JSON.stringify(entry.href) },
    keepNames: true,
    metafile: true,
    write: false,
    outfile: join(dir, 'out.mjs'),
    logLevel: 'silent',
  });
  const text = out.outputFiles[0]!.text;
  const inputs: Record<string, string> = {};
  for (const p of Object.keys(out.metafile.inputs)) {
    const abs = join(cwd, p);
    inputs[abs] = hashOf(readFileSync(abs));
  }
  const file = `${key}-${hashOf(text).slice(0, 16)}.mjs`;
  mkdirSync(dir, { recursive: true });
  // Marked before it exists: until the index names it, only the mark keeps a sweep off it.
  markUse(join(dir, file), use);
  writeAtomic(join(dir, file), text);
  writeAtomic(indexPath, JSON.stringify({ file, inputs } satisfies BundleIndex));
  sweep(dir, use);
  return pathToFileURL(join(dir, file));
}

function markUse(bundle: string, use: BundleUse): void {
  const mark = `${bundle}.${use.pid}.use`;
  if (use === OWN_USE && useMarks.includes(mark)) return;
  mkdirSync(join(bundle, '..'), { recursive: true });
  writeFileSync(mark, '');
  if (use !== OWN_USE) return;
  if (useMarks.length === 0) process.once('exit', dropUseMarks);
  useMarks.push(mark);
}

/**
 * Remove from `dir` every bundle no index names and no running process marked (UNMARKED_KEEP_MS
 * after it was last named), the marks of processes gone, and their half-written files. Best
 * effort: another process may sweep at once, and a file gone already is no fault.
 */
function sweep(dir: string, use: BundleUse): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  const named = new Set<string>();
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    const index = readIndex(join(dir, n));
    if (index !== null) named.add(index.file);
  }
  const usedBy = new Map<string, boolean>();
  for (const n of names) {
    const m = /^(.+\.(?:mjs|json))\.(\d+)\.(use|tmp)$/.exec(n);
    if (m === null) continue;
    if (use.alive(Number(m[2]))) {
      if (m[3] === 'use') usedBy.set(m[1]!, true);
    } else rmQuiet(join(dir, n));
  }
  for (const n of names) {
    if (!n.endsWith('.mjs') || named.has(n) || usedBy.has(n)) continue;
    const path = join(dir, n);
    // `<key>-<hash>.mjs`: its index is `<key>.json`; one gone names nothing since its own mtime.
    const index = join(dir, `${n.slice(0, n.indexOf('-'))}.json`);
    const lastNamed = Math.max(mtimeOf(path), mtimeOf(index, Number.NEGATIVE_INFINITY));
    if (use.now() - lastNamed >= UNMARKED_KEEP_MS) rmQuiet(path);
  }
}

function mtimeOf(path: string, missing = Number.POSITIVE_INFINITY): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return missing;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it runs, as another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function rmQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Gone already (another sweep), or never made.
  }
}

function loadEsbuild(): Esbuild | null {
  try {
    // esbuild comes with tsx, which a source checkout has; an installed package starts compiled
    // workers and never gets here.
    const tsxRequire = createRequire(createRequire(import.meta.url).resolve('tsx/esm/api'));
    return tsxRequire('esbuild') as Esbuild;
  } catch {
    return null;
  }
}

function readIndex(path: string): BundleIndex | null {
  try {
    const index = JSON.parse(readFileSync(path, 'utf8')) as BundleIndex;
    return existsSync(join(path, '..', index.file)) ? index : null;
  } catch {
    return null;
  }
}

function upToDate(index: BundleIndex): boolean {
  try {
    for (const [path, hash] of Object.entries(index.inputs)) {
      if (hashOf(readFileSync(path)) !== hash) return false;
    }
    return true;
  } catch {
    return false;
  }
}

function hashOf(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Written under a name of this process's, then renamed: a reader sees all of it or none. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}
