import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkLayers, checkTree, parseImports, readRule } from '../../scripts/check-layers.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SCRIPT = join(ROOT, 'scripts', 'check-layers.ts');
const DOC = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
const BIOME = createRequire(import.meta.url).resolve('@biomejs/biome/bin/biome');

const temps: string[] = [];
after(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

/** A scratch project: the real architecture.md and biome.json (VCS off: it is no git tree), plus files. */
function scratch(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'chimney-layers-'));
  temps.push(dir);
  const biome = JSON.parse(readFileSync(join(ROOT, 'biome.json'), 'utf8'));
  biome.vcs = { enabled: false };
  biome.$schema = undefined;
  const all: Record<string, string> = {
    'docs/architecture.md': DOC,
    'biome.json': JSON.stringify(biome),
    ...files,
  };
  for (const [p, text] of Object.entries(all)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), text);
  }
  return dir;
}

function run(args: string[], cwd: string) {
  return spawnSync(process.execPath, args, { cwd, encoding: 'utf8', timeout: 60_000 });
}

describe('layer rule check (scripts/check-layers.ts)', () => {
  test('finds every kind of import, on its line', () => {
    const src = [
      "import type { Link } from '../core/link.ts';",
      'import {',
      '  a,',
      '  type B,',
      "} from '../state/x.ts';",
      "export * from './y.ts';",
      "export { z } from '../wire/z.ts';",
      "import './side-effect.ts';",
      'export function f() {',
      "  return 'from here';",
      '}',
      "const m = await import('../link/tap-link.ts');",
      "spawn(new URL('./worker/entry.ts', import.meta.url));",
    ].join('\n');
    assert.deepEqual(parseImports(src), [
      { specifier: '../core/link.ts', line: 1 },
      { specifier: '../state/x.ts', line: 2 },
      { specifier: './y.ts', line: 6 },
      { specifier: '../wire/z.ts', line: 7 },
      { specifier: './side-effect.ts', line: 8 },
      { specifier: '../link/tap-link.ts', line: 12 },
      { specifier: './worker/entry.ts', line: 13 },
    ]);
  });

  test('reads the table of docs/architecture.md', () => {
    const rule = readRule(DOC);
    assert.deepEqual([...(rule.get('stack') ?? [])].sort(), ['core', 'state', 'wire']);
    assert.deepEqual([...(rule.get('core') ?? [])], []);
    assert.ok(rule.get('cli')?.has('sim'));
    assert.ok(rule.get('index')?.has('sim'));
    for (const layer of ['wire', 'state', 'stack', 'link', 'nic', 'socket', 'offload', 'team']) {
      assert.equal(rule.get(layer)?.has('sim'), false, `${layer} may not import sim`);
      assert.equal(rule.get(layer)?.has('cli'), false, `${layer} may not import cli`);
    }
  });

  test('refuses a forbidden import and names the file, line and edge', () => {
    const rule = readRule(DOC);
    const files = new Map([
      [
        'src/stack/tcp/x.ts',
        "import { a } from '../../state/a.ts';\nimport type { L } from '../../link/tap-link.ts';\n",
      ],
      ['src/stack/y.ts', "import type { Link } from '../core/link.ts';\nimport { b } from './tcp/x.ts';\n"],
      ['src/wire/w.ts', "import { S } from '../sim/sim-network.ts';\n"],
      ['src/team/t.ts', "import { x } from '../../test/helpers/x.ts';\n"],
      [
        'src/cli/c.ts',
        "import { run } from '../../bench/run.ts';\nimport { SimNetwork } from '../sim/index.ts';\n",
      ],
    ]);
    const v = checkLayers(files, rule);
    assert.deepEqual(
      v.map((x) => `${x.file}:${x.line} ${x.specifier}`),
      [
        'src/stack/tcp/x.ts:2 ../../link/tap-link.ts',
        'src/wire/w.ts:1 ../sim/sim-network.ts',
        'src/team/t.ts:1 ../../test/helpers/x.ts',
      ],
    );
    assert.match(v[0].message, /'stack' may not import 'link'/);
  });

  test('refuses a folder the table does not place', () => {
    const v = checkLayers(
      new Map([['src/extra/e.ts', "import { a } from '../core/errors.ts';\n"]]),
      readRule(DOC),
    );
    assert.equal(v.length, 1);
    assert.match(v[0].message, /'extra' is not in the table/);
  });

  test('the real tree follows the rule', () => {
    assert.deepEqual(checkTree(ROOT), []);
  });

  test('the script exits 1 on a tree with a forbidden import and 0 once it is gone', () => {
    const bad = scratch({
      'src/link/l.ts': 'export const l = 1;\n',
      'src/stack/s.ts': "import { l } from '../link/l.ts';\nexport const s = l;\n",
    });
    const r = run(['--import', 'tsx', SCRIPT, '--root', bad], ROOT);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /src\/stack\/s\.ts:1: '\.\.\/link\/l\.ts': 'stack' may not import 'link'/);

    const good = scratch({
      'src/link/l.ts': "import { c } from '../core/c.ts';\nexport const l = c;\n",
      'src/core/c.ts': 'export const c = 1;\n',
      'src/stack/s.ts': "import { c } from '../core/c.ts';\nexport const s = c;\n",
    });
    const ok = run(['--import', 'tsx', SCRIPT, '--root', good], ROOT);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  });
});

describe('import cycles (Biome noImportCycles, with the project biome.json)', () => {
  test('a cycle between two files fails the lint; the same files without it pass', () => {
    const cyclic = scratch({
      'src/a.ts': "import { b } from './b.ts';\nexport const a = (): number => b() + 1;\n",
      'src/b.ts': "import { a } from './a.ts';\nexport const b = (): number => a() - 1;\n",
    });
    const r = run([BIOME, 'lint', 'src'], cyclic);
    assert.notEqual(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /noImportCycles/);

    const acyclic = scratch({
      'src/a.ts': "import { b } from './b.ts';\nexport const a = (): number => b() + 1;\n",
      'src/b.ts': 'export const b = (): number => 1;\n',
    });
    const ok = run([BIOME, 'lint', 'src'], acyclic);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  });
});
