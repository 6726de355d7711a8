/**
 * tshark captures of a lab's devices, and the check every capture gets: no malformed frame and no
 * bad checksum. Shared by the conformance suite, the interop capture test and the TAP tests.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { type Lab, sleep, stopProcess } from '../interop/lab.ts';

export interface Capture {
  readonly pcap: string;
  /** Let the last frames reach the file, then stop tshark (idempotent). */
  stop(): Promise<void>;
}

/**
 * How long tshark may take to say it captures (it loads its dissectors first). At nice 19 beside
 * load 31-32 interop/ipv6's tshark had not said so in 10 s, nor in 60 s; on lo at load 38 its
 * first line came after 39 s and the word not in 125 s. No bound serves a start starved like that
 * (dumpcap in tap/ecn is given a minute, and this is twice that); a capture that never starts
 * still fails.
 */
export const TSHARK_START_MS = 120_000;

/**
 * Capture `dev` (in the root namespace) to `pcap`, resolved once tshark says it captures. `snaplen`
 * keeps headers only, for runs whose payload would fill the disk.
 */
export async function startCapture(lab: Lab, dev: string, pcap: string, snaplen?: number): Promise<Capture> {
  const argv = ['tshark', '-i', dev, ...(snaplen ? ['-s', String(snaplen)] : []), '-w', pcap, '-q'];
  let proc: ChildProcess | null = lab.spawn(argv);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  for (const by = Date.now() + TSHARK_START_MS; !/Capturing on/.test(err) && Date.now() < by; )
    await sleep(100);
  if (!/Capturing on/.test(err)) {
    await stopProcess(proc, 1000);
    throw new Error(`tshark did not start on ${dev}: ${err}`);
  }
  return {
    pcap,
    async stop(): Promise<void> {
      if (!proc) return;
      const p = proc;
      proc = null;
      await sleep(300);
      await stopProcess(p, 5000);
    },
  };
}

/**
 * `tshark -r pcap -Y filter -T fields -e ...` (fields separated by '|'), with checksums verified
 * unless `checksums` is false (a capture of frames whose TCP sums the device completes: verified,
 * each would be an expert error); asserts tshark succeeded. One row per frame.
 */
export async function readCapture(
  lab: Lab,
  pcap: string,
  filter: string,
  fields: string[],
  o: { checksums?: boolean } = {},
): Promise<string[]> {
  const verify =
    o.checksums === false ? [] : ['-o', 'tcp.check_checksum:TRUE', '-o', 'ip.check_checksum:TRUE'];
  const r = await lab.run(
    [
      'tshark',
      '-r',
      pcap,
      ...verify,
      '-Y',
      filter,
      '-T',
      'fields',
      '-E',
      'separator=|',
      ...fields.flatMap((f) => ['-e', f]),
    ],
    60_000,
  );
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout.trim();
  return out === '' ? [] : out.split('\n');
}

/** `readCapture`'s rows, each split into its fields (in the order asked; '' for one absent). */
export async function captureRows(
  lab: Lab,
  pcap: string,
  filter: string,
  fields: string[],
  o: { checksums?: boolean } = {},
): Promise<string[][]> {
  return (await readCapture(lab, pcap, filter, fields, o)).map((l) => l.split('|'));
}

/** A flag field of `captureRows` set: tshark prints '1' (before 3.x) or 'True' (since). */
export function flagOn(v: string | undefined): boolean {
  return v === '1' || v === 'True';
}

/**
 * Assert that no frame of the capture is malformed or fails an IPv4, TCP, ICMP or ICMPv6
 * checksum; with `expertErrors`, neither does any frame tshark's expert system calls an error.
 * When the kernel completes a partial checksum in software and the sum is 0 it writes 0xffff
 * (CSUM_MANGLED_0, the same value in one's complement); tshark flags it, about one frame in 65,536
 * whoever sent it, so such TCP frames are not counted. `checksums: false` checks structure only,
 * for a capture on a TAP with checksum offload, where TCP frames carry partial checksums.
 */
export async function assertCleanCapture(
  lab: Lab,
  pcap: string,
  o: { expertErrors?: boolean; checksums?: boolean } = {},
): Promise<void> {
  const sums = o.checksums === false ? [] : ['tcp', 'ip', 'icmpv6', 'icmp'];
  const bad = [
    '_ws.malformed',
    ...sums.map((p) => `${p}.checksum.status == 0`),
    ...(o.expertErrors ? ['_ws.expert.severity == error'] : []),
  ];
  const rows = await readCapture(
    lab,
    pcap,
    `(${bad.join(' || ')}) && !(tcp.checksum == 0xffff)`,
    ['frame.number', '_ws.col.Info'],
    { checksums: o.checksums },
  );
  assert.deepEqual(rows.slice(0, 50), [], `${rows.length} bad frame(s)`);
}
