/**
 * An isolated lab per interop test file, so files can run in parallel and a crashed run never
 * breaks the next one (stale devices of the same file are removed before setup):
 *
 * (<tag> is the file's tag plus two base-36 digits of the process id)
 *   chb-<tag>   bridge, no address (the root namespace stays out of the tests' traffic)
 *   cht-<tag>N  persistent TAPs (vnet_hdr), ports of the bridge; Chimney opens them
 *   chv-<tag>   veth, port of the bridge, peer of chv-<tag>p
 *   chns-<tag>  namespace holding chv-<tag>p with 10.9.<subnet>.1/24: the Linux peer
 *
 * Chimney takes 10.9.<subnet>.2 (serve) and .3 (get). Every child is spawned in a process group
 * of its own, and the lab kills the groups and removes its devices in `down()`, which the test
 * file's `after()` hook and a process 'exit' handler both call, so a failing test cleans up too.
 *
 * With `offloads: false` the veth pair loses checksum and segmentation offload, so the kernel
 * segments and sums every frame before it crosses the veth: a capture there shows complete
 * frames in both directions, whatever TSO Chimney uses on its TAP.
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * The checkout whose `chimney` (and scripts) the interop runs use: this one, or CHIMNEY_ROOT's, so
 * that another build (a same-run reference) runs under this harness.
 */
export const ROOT = resolve(process.env.CHIMNEY_ROOT ?? resolve(import.meta.dirname, '../..'));
export const CHIMNEY = join(ROOT, 'bin/chimney.js');

/** Why the interop tests cannot run here, or null when they can. */
export function missingPrerequisite(tools: string[] = []): string | null {
  if (process.platform !== 'linux') return `interop tests need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'interop tests need root (they create TAPs and namespaces)';
  if (!existsSync('/dev/net/tun')) return 'interop tests need /dev/net/tun (modprobe tun)';
  for (const t of ['ip', ...tools]) {
    if (!hasTool(t)) return `interop tests need '${t}' (apt-get install ${aptName(t)})`;
  }
  return null;
}

function aptName(tool: string): string {
  return (
    { ip: 'iproute2', ss: 'iproute2', tshark: 'tshark', python3: 'python3', ethtool: 'ethtool' }[tool] ?? tool
  );
}

/**
 * The interpreter `python3` names on the PATH, by its own path, found once per process. Where
 * `python3` is a pyenv shim (a bash script that runs `pyenv exec`, as on this project's machine),
 * a start through the shim took 2.6-3.0 s at load 28 against 0.55-0.7 s for the interpreter
 * itself, and each Linux case of the conformance suite, which starts its agent per case (~90 of
 * them), ran 0.27 s longer than the same case against Chimney on the quiet CI run.
 */
export function python3(): string {
  pythonPath ??=
    execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim() ||
    'python3';
  return pythonPath;
}
let pythonPath: string | undefined;

export function hasTool(t: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Test options for a file whose prerequisites may be missing: outside CI the tests are skipped
 * with the reason printed once; in CI (process.env.CI set) they run and fail with the reason.
 */
export function interopGate(
  tools: string[],
  o: { cli?: boolean } = {},
): { reason: string | null; skip: string | false } {
  const reason = missingPrerequisite(tools) ?? (o.cli ? cliMissing() : null);
  if (reason && !process.env.CI) {
    console.log(`# skipping interop tests: ${reason}`);
    return { reason, skip: reason };
  }
  return { reason, skip: false };
}

let cliReason: string | null | undefined;

/** Why `chimney serve` / `chimney get` cannot be run, or null (asked once per process). */
export function cliMissing(): string | null {
  if (cliReason !== undefined) return cliReason;
  let help = '';
  // A start's CPU is ~1.3 s (tsx compiles the CLI): `--help` took 24 s at load 34, and 30 s once
  // failed a whole TAP file as a CLI "without serve". A bound for a machine far slower than that,
  // and a timeout said as one.
  const limitMs = 120_000;
  try {
    help = execFileSync(process.execPath, [CHIMNEY, '--help'], {
      encoding: 'utf8',
      cwd: ROOT,
      timeout: limitMs,
    });
  } catch (e) {
    const err = e as { stdout?: string; code?: string; signal?: string };
    if (err.code === 'ETIMEDOUT' || err.signal) {
      cliReason = `'chimney --help' did not finish in ${limitMs / 1000} s (${err.code ?? err.signal})`;
      return cliReason;
    }
    help = String(err.stdout ?? '');
  }
  const lacking = ['serve', 'get'].filter((c) => !new RegExp(`^\\s+${c} `, 'm').test(help));
  cliReason = lacking.length
    ? `the CLI has no ${lacking.map((c) => `'chimney ${c}'`).join(' or ')} yet`
    : null;
  return cliReason;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface LabOptions {
  /** 1..4 characters, unique per test file: names every device of the lab. */
  tag: string;
  /** Third octet of the lab's 10.9.x.0/24, unique per test file. */
  subnet: number;
  /** TAP devices to make (default 1). */
  taps?: number;
  /** Keep checksum/segmentation offload on the veth pair (default true). */
  offloads?: boolean;
  /** MTU of every device (default 1500). */
  mtu?: number;
  /**
   * `serve` and `get` are given `--vlan` with this 802.1Q id. The bridge forwards tagged frames as
   * they are; the kernel's own address stays untagged (this machine's kernel has no 802.1Q: no
   * CONFIG_VLAN_8021Q, no bridge VLAN filtering), so only Chimney instances meet on the VLAN.
   */
  vlan?: number;
}

export interface ServeOptions {
  tap?: number;
  /** false: no IPv4 --ip (an IPv6-only host; give its addresses in `extra`). Default true. */
  ipv4?: boolean;
  services?: string[];
  pcap?: string;
  extra?: string[];
  /** How long to wait for the ready line (default SERVE_READY_MS). */
  readyMs?: number;
}

/**
 * How long `serve` may take to print its ready line: its start is ~1.3 s of CPU (tsx compiles the
 * CLI), which took 24 s of wall time at load 34; the old 20 s left no room for a slower machine.
 */
export const SERVE_READY_MS = 90_000;

export interface Served {
  proc: ChildProcess;
  readyLine: string;
  /** Everything the server wrote to stdout and stderr so far (for failure messages). */
  log(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

const SCRATCH_LIMIT = 4 * 1024 * 1024;

export class Lab {
  readonly tag: string;
  readonly ns: string;
  readonly bridge: string;
  readonly taps: string[];
  readonly veth: string;
  readonly vethPeer: string;
  readonly subnet: number;
  readonly mtu: number;
  /** The Linux peer inside the namespace. */
  readonly kernelIp: string;
  /** Chimney's addresses: serve (index 0), get (index 1), ... */
  readonly chimneyIps: string[];
  readonly dir: string;
  private readonly procs = new Set<ChildProcess>();
  private isDown = false;

  constructor(private readonly opts: LabOptions) {
    if (!/^[a-z0-9]{1,4}$/.test(opts.tag)) throw new Error(`lab tag '${opts.tag}' must be 1..4 of [a-z0-9]`);
    if (!Number.isInteger(opts.subnet) || opts.subnet < 10 || opts.subnet > 250) {
      throw new Error(`lab subnet ${opts.subnet} must be in 10..250 (10.9.0.x belongs to scripts/lab.sh)`);
    }
    // A per-process suffix keeps two suite runs on one machine (two engineers, CI) apart.
    const t = `${opts.tag}${(process.pid % 1296).toString(36).padStart(2, '0')}`;
    this.tag = t;
    this.ns = `chns-${t}`;
    this.bridge = `chb-${t}`;
    this.taps = Array.from({ length: opts.taps ?? 1 }, (_, i) => `cht-${t}${i}`);
    this.veth = `chv-${t}`;
    this.vethPeer = `chv-${t}p`;
    this.subnet = opts.subnet;
    this.mtu = opts.mtu ?? 1500;
    this.kernelIp = `10.9.${opts.subnet}.1`;
    this.chimneyIps = [2, 3, 4, 5].map((h) => `10.9.${opts.subnet}.${h}`);
    this.dir = mkdtempSync(join(tmpdir(), `chimney-${t}-`));
  }

  /** `ip` with the arguments, throwing with its stderr on failure. */
  ip(...args: string[]): string {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  private exists(dev: string): boolean {
    return existsSync(`/sys/class/net/${dev}`);
  }

  private nsExists(): boolean {
    return this.ip('netns', 'list')
      .split('\n')
      .some((l) => l.split(' ')[0] === this.ns);
  }

  up(): void {
    this.removeDevices();
    const mtu = String(this.mtu);
    this.ip('link', 'add', 'name', this.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
    this.ip('link', 'set', 'dev', this.bridge, 'mtu', mtu, 'up');
    for (const tap of this.taps) {
      this.ip('tuntap', 'add', 'mode', 'tap', 'name', tap, 'vnet_hdr');
      // The TAP's queue towards Chimney is the ring a NIC would have: 1000 frames (the default) is
      // 40 ms of a thousand connections' ACKs, less than a busy machine can keep a thread off its
      // core; the kernel drops what does not fit, and every dropped ACK costs a retransmission.
      this.ip('link', 'set', 'dev', tap, 'mtu', mtu, 'txqueuelen', '10000', 'master', this.bridge, 'up');
    }
    this.ip('netns', 'add', this.ns);
    this.ip(
      'link',
      'add',
      this.veth,
      'mtu',
      mtu,
      'type',
      'veth',
      'peer',
      'name',
      this.vethPeer,
      'mtu',
      mtu,
      'netns',
      this.ns,
    );
    this.ip('link', 'set', 'dev', this.veth, 'master', this.bridge, 'up');
    this.ip('-n', this.ns, 'addr', 'add', `${this.kernelIp}/24`, 'dev', this.vethPeer);
    this.ip('-n', this.ns, 'link', 'set', 'dev', this.vethPeer, 'up');
    this.ip('-n', this.ns, 'link', 'set', 'dev', 'lo', 'up');
    if (this.opts.offloads === false) {
      for (const [ns, dev] of [
        [null, this.veth],
        [this.ns, this.vethPeer],
      ] as const) {
        const argv = ['-K', dev, 'tx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];
        if (ns) execFileSync('ip', ['netns', 'exec', ns, 'ethtool', ...argv], { stdio: 'ignore' });
        else execFileSync('ethtool', argv, { stdio: 'ignore' });
      }
    }
    process.once('exit', this.downSync);
  }

  /** `--vlan V` for Chimney's commands when the lab has a VLAN. */
  private vlanFlag(): string[] {
    return this.opts.vlan === undefined ? [] : ['--vlan', String(this.opts.vlan)];
  }

  /** Removes this lab's devices and namespace, if any (idempotent, never throws). */
  private removeDevices(): void {
    const tryIp = (...a: string[]): void => {
      try {
        this.ip(...a);
      } catch {}
    };
    if (this.nsExists()) tryIp('netns', 'del', this.ns);
    for (const d of [this.veth, ...this.taps, this.bridge]) if (this.exists(d)) tryIp('link', 'del', d);
  }

  private readonly downSync = (): void => {
    if (this.isDown) return;
    this.isDown = true;
    for (const p of this.procs) killGroup(p, 'SIGKILL');
    this.removeDevices();
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {}
  };

  /** Stop every child (TERM, then KILL), remove the devices and the scratch directory. */
  async down(): Promise<void> {
    if (this.isDown) return;
    await Promise.all([...this.procs].map((p) => stopProcess(p, 2000)));
    this.downSync();
    process.removeListener('exit', this.downSync);
  }

  /** Spawn a tracked child in its own process group (killed in down()). */
  spawn(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], ...opts, detached: true });
    this.procs.add(p);
    p.once('exit', () => this.procs.delete(p));
    return p;
  }

  /** Spawn argv inside the namespace. */
  spawnNs(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    return this.spawn(['ip', 'netns', 'exec', this.ns, ...argv], opts);
  }

  /**
   * Run a child to completion, killing its group after `timeoutMs`. stdout and stderr are kept
   * up to 4 MiB each (bulk data belongs in files or pipes to sha256sum).
   */
  run(argv: string[], timeoutMs: number, opts: SpawnOptions = {}): Promise<RunResult> {
    const t0 = performance.now();
    const p = this.spawn(argv, opts);
    return collectRun(p, timeoutMs, t0);
  }

  /** `bash -c script` inside the namespace, with pipefail so a failing curl fails the pipe. */
  sh(script: string, timeoutMs: number): Promise<RunResult> {
    return this.run(['ip', 'netns', 'exec', this.ns, 'bash', '-c', `set -o pipefail; ${script}`], timeoutMs);
  }

  /** `chimney serve` on the lab's TAP `tap`, resolved once it prints its ready line. */
  async serve(o: ServeOptions = {}): Promise<Served> {
    const tapIdx = o.tap ?? 0;
    const argv = [
      process.execPath,
      // Diagnosis: node flags for serve (e.g. `--cpu-prof --cpu-prof-dir=DIR`, which profiles the
      // main thread; serve's CHIMNEY_LAG_LOG traces its workers' event loops).
      ...(process.env.CHIMNEY_SERVE_NODE_FLAGS?.split(' ').filter(Boolean) ?? []),
      CHIMNEY,
      'serve',
      '--tap',
      this.taps[tapIdx]!,
      ...(o.ipv4 === false ? [] : ['--ip', `${this.chimneyIps[tapIdx]}/24`]),
      '--mac',
      this.mac(tapIdx),
    ];
    for (const s of o.services ?? ['echo:7', 'discard:9', 'http:80']) argv.push('--service', s);
    if (o.pcap) argv.push('--pcap', o.pcap);
    argv.push(...this.vlanFlag(), ...(o.extra ?? []));
    const proc = this.spawn(argv, { cwd: ROOT });
    let out = '';
    const keep = (d: Buffer): void => {
      if (out.length < SCRATCH_LIMIT) out += d.toString();
    };
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    const readyLine = await new Promise<string>((res, rej) => {
      let line = '';
      const timer = setTimeout(() => {
        killGroup(proc, 'SIGKILL');
        rej(new Error(`chimney serve printed no ready line in ${o.readyMs ?? SERVE_READY_MS} ms:\n${out}`));
      }, o.readyMs ?? SERVE_READY_MS);
      const onData = (d: Buffer): void => {
        line += d.toString();
        const nl = line.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          proc.stdout!.off('data', onData);
          res(line.slice(0, nl));
        }
      };
      proc.stdout!.on('data', onData);
      proc.once('exit', (code, sig) => {
        clearTimeout(timer);
        rej(new Error(`chimney serve exited (${code ?? sig}) before it was ready:\n${out}`));
      });
    });
    return {
      proc,
      readyLine,
      log: () => out,
      stop: (graceMs = 3000) => stopProcess(proc, graceMs),
    };
  }

  /** `chimney get URL` on TAP `tap` (default 1), body to `outFile`. */
  get(
    url: string,
    outFile: string,
    timeoutMs: number,
    o: { tap?: number; extra?: string[]; ipv4?: boolean } = {},
  ) {
    const tapIdx = o.tap ?? 1;
    const argv = [
      process.execPath,
      CHIMNEY,
      'get',
      url,
      '--tap',
      this.taps[tapIdx]!,
      ...(o.ipv4 === false ? [] : ['--ip', `${this.chimneyIps[tapIdx]}/24`]),
      '-o',
      outFile,
      ...this.vlanFlag(),
      ...(o.extra ?? []),
    ];
    return this.run(argv, timeoutMs, { cwd: ROOT });
  }

  /** A locally administered MAC for Chimney on TAP `i`. */
  mac(i: number): string {
    const h = (n: number): string => n.toString(16).padStart(2, '0');
    return `02:c0:00:${h(this.subnet)}:00:${h(i + 2)}`;
  }

  /** A python3 http.server in the namespace serving `dir` on `port`; resolves once it listens. */
  async pythonHttp(dir: string, port: number): Promise<ChildProcess> {
    const p = this.spawnNs([
      python3(),
      '-m',
      'http.server',
      String(port),
      '--bind',
      this.kernelIp,
      '--directory',
      dir,
    ]);
    await this.waitListening(port, 10_000);
    return p;
  }

  /** Poll `ss` in the namespace until something listens on TCP `port`. */
  async waitListening(port: number, timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs;
    while (performance.now() < end) {
      const r = await this.sh(`ss -Hltn 'sport = :${port}'`, 5000);
      if (r.stdout.trim() !== '') return;
      await sleep(100);
    }
    throw new Error(`nothing listens on port ${port} in ${this.ns} after ${timeoutMs} ms`);
  }
}

function collectRun(p: ChildProcess, timeoutMs: number, t0: number): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  p.stdout?.on('data', (d: Buffer) => {
    if (stdout.length < SCRATCH_LIMIT) stdout += d.toString();
  });
  p.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < SCRATCH_LIMIT) stderr += d.toString();
  });
  return new Promise((res) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(p, 'SIGKILL');
    }, timeoutMs);
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n[killed after ${timeoutMs} ms]`;
      res({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
    p.once('error', (e) => {
      clearTimeout(timer);
      res({ code: -1, signal: null, stdout, stderr: `${stderr}\n${e.message}`, ms: performance.now() - t0 });
    });
  });
}

export function killGroup(p: ChildProcess, sig: NodeJS.Signals): void {
  if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
  try {
    process.kill(-p.pid, sig);
  } catch {
    try {
      p.kill(sig);
    } catch {}
  }
}

/** SIGTERM the group, SIGKILL it after `graceMs`; resolves with the exit code. */
export function stopProcess(p: ChildProcess, graceMs: number): Promise<number | null> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(p.exitCode);
  return new Promise((res) => {
    const timer = setTimeout(() => killGroup(p, 'SIGKILL'), graceMs);
    p.once('exit', (code) => {
      clearTimeout(timer);
      res(code);
    });
    killGroup(p, 'SIGTERM');
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Make the lab for a test file, or null (tests skip) when prerequisites are missing. */
export function makeLab(opts: LabOptions, reason: string | null): Lab | null {
  if (reason) return null;
  const lab = new Lab(opts);
  lab.up();
  return lab;
}

// ---------------------------------------------------------------------------------------------
// Data the tests move and check.

/** One period-aligned block of the /bytes pattern (byte i = i mod 251). */
const PATTERN_BLOCK = (() => {
  const b = Buffer.alloc(251 * 4096);
  for (let i = 0; i < b.length; i++) b[i] = i % 251;
  return b;
})();

/** SHA-256 of the first `n` bytes of the pattern served by `GET /bytes/N`. */
export function patternDigest(n: number): string {
  const h = createHash('sha256');
  let left = n;
  while (left > 0) {
    const k = Math.min(left, PATTERN_BLOCK.length);
    h.update(PATTERN_BLOCK.subarray(0, k));
    left -= k;
  }
  return h.digest('hex');
}

/**
 * Write `size` pseudo-random bytes (AES-128-CTR keystream of `seed`, so fast and repeatable) to
 * `path`; resolves with their SHA-256.
 */
export async function writeDataFile(path: string, size: number, seed: number): Promise<string> {
  const key = Buffer.alloc(16);
  key.writeUInt32BE(seed >>> 0, 0);
  const c = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(1 << 20);
  const h = createHash('sha256');
  const ws = createWriteStream(path);
  for (let off = 0; off < size; off += zero.length) {
    const chunk = c.update(zero.subarray(0, Math.min(zero.length, size - off)));
    h.update(chunk);
    if (!ws.write(chunk)) await new Promise<void>((r) => ws.once('drain', () => r()));
  }
  await new Promise<void>((res, rej) => ws.end((e?: Error | null) => (e ? rej(e) : res())));
  return h.digest('hex');
}

/** Parse `sha256sum` output. */
/** SHA-256 of a file, hex. */
export function fileDigest(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('end', () => res(h.digest('hex')))
      .on('error', rej);
  });
}

export function shaOf(out: string): string {
  return out.trim().split(/\s+/)[0] ?? '';
}
