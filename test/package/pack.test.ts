import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

/**
 * The round trip a user makes: `npm pack` (which builds dist/ through `prepare`), install the
 * tarball into an empty directory, and use the package from there, with nothing of the source
 * tree or of tsx in reach.
 */
describe('npm package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'chimney-pack-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const run = (cmd: string, args: string[]) =>
    spawnSync(cmd, args, {
      cwd: dir,
      encoding: 'utf8',
      timeout: 240_000,
      env: { ...process.env, npm_config_loglevel: 'error' },
    });

  test('packs, installs from the tarball and runs compiled JavaScript', () => {
    execFileSync('npm', ['pack', '--pack-destination', dir, '--silent'], {
      cwd: ROOT,
      stdio: 'pipe',
      timeout: 240_000,
    });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack wrote no tarball');
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    );
    const inst = run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', `./${tarball}`]);
    assert.equal(inst.status, 0, inst.stderr);
    const pkg = join(dir, 'node_modules/chimney');
    assert.ok(existsSync(join(pkg, 'dist/index.js')) && existsSync(join(pkg, 'dist/index.d.ts')));
    assert.equal(existsSync(join(pkg, 'src')), false, 'the package ships compiled code, not sources');
    assert.equal(existsSync(join(dir, 'node_modules/tsx')), false, 'tsx must not be a run-time dependency');

    const demo = run('npx', '--no-install chimney demo --json --connections 4 --bytes 64KiB'.split(' '));
    assert.equal(demo.status, 0, demo.stderr);
    const summary = JSON.parse(demo.stdout);
    assert.equal(summary.verified, true);
    assert.equal(summary.bytes, 2 * 4 * 65536);

    // The library through its package name: an echo over the simulated network.
    // Scripts go in files: a worker inherits --input-type from its parent's execArgv and refuses it.
    const script = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return run(process.execPath, [name]);
    };
    const lib = script(
      'lib.mjs',
      `import('chimney').then(async (m) => {
        const net = new m.SimNetwork({ seed: 5 });
        const a = net.addHost({ ip: '10.0.0.1/24' });
        const b = net.addHost({ ip: '10.0.0.2/24' });
        b.createServer((s) => s.pipe(s)).listen(7);
        const s = a.connect(7, '10.0.0.2');
        let got = '';
        s.on('data', (d) => { got += d; });
        s.on('end', () => { console.log(got); net.close(); });
        s.end('hello chimney');
      })`,
    );
    assert.equal(lib.status, 0, lib.stderr);
    assert.equal(lib.stdout.trim(), 'hello chimney');

    // A worker thread started from the compiled package runs the compiled worker entry.
    const worker = script(
      'worker.mjs',
      `const { WorkerNic } = await import(${JSON.stringify(`${pkg}/dist/nic/worker-nic.js`)});
       const { SimNetwork } = await import('chimney');
       const net = new SimNetwork({ seed: 1, virtualTime: false });
       const nic = new WorkerNic({ id: 'w0', link: net.switch.addPort({ name: 'w0', mtu: 1500 }), seed: 1 });
       await nic.ready();
       console.log('ready');
       nic.close();
       net.close();
       process.exit(0);`,
    );
    assert.equal(worker.status, 0, worker.stderr);
    assert.equal(worker.stdout.trim(), 'ready');
  });

  test('its declarations type-check a consumer', () => {
    writeFileSync(
      join(dir, 'consumer.ts'),
      `import { SimNetwork, type SimHost } from 'chimney';
const net: SimNetwork = new SimNetwork({ seed: 1 });
const host: SimHost = net.addHost({ ip: '10.0.0.1/24' });
const port: number = host.createServer(() => {}).listen(80).address()?.port ?? 0;
console.log(port);
`,
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules/@types')],
          skipLibCheck: false,
        },
        files: ['consumer.ts'],
      }),
    );
    const ok = run(process.execPath, [TSC, '-p', 'tsconfig.json']);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    // And a misuse is caught by those same declarations.
    writeFileSync(
      join(dir, 'consumer.ts'),
      `import { SimNetwork } from 'chimney';\nnew SimNetwork({ seed: 'one' });\n`,
    );
    const bad = run(process.execPath, [TSC, '-p', 'tsconfig.json']);
    assert.notEqual(bad.status, 0, 'a wrong option type must not type-check');
  });
});
