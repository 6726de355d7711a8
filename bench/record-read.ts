/**
 * A cold pass of transfer-record reads (issue 10 item 3): what a crash's survivor worker does first
 * in each of its builds, in a thread whose code is as cold as a fresh worker's. N records of one
 * established connection (no lists) are written into one SharedArrayBuffer, then each is read into
 * a new state (`TransferRecord.read`) and dropped; the thread's CPU is taken per thousand reads
 * (schedstat), so the load's waits for a core do not count. How soon V8 optimizes the reader is
 * what the figures show: the first thousands run it unoptimized.
 *
 *   npx tsx bench/record-read.ts [--json] [--records N]
 *   CHIMNEY_ROOT=<tree> npx tsx bench/record-read.ts ...   (that tree's build, for a same-run reference)
 *
 * One pass a process (the second would be warm): run it several times, alternated with the reference.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import type * as Records from '../src/nic/transfer-record.ts';
import type * as Trees from '../src/state/offload-tree.ts';
import type * as Helpers from '../test/state/helpers.ts';
import { benchMain, parseBenchFlags } from './args.ts';
import { benchRoot } from './warm-move.ts';

export interface RecordReadResult {
  root: string;
  records: number;
  /** This thread's CPU over each thousand reads (the last share if N is not a multiple), ms. */
  perThousandCpuMs: number[];
  totalCpuMs: number;
}

function threadCpuMs(): number {
  return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
}

export async function benchRecordRead(o: { records?: number } = {}): Promise<RecordReadResult> {
  const { root, load } = benchRoot();
  const n = o.records ?? 10_000;
  const { TransferRecord, TRANSFER_RECORD_BYTES } = await load<typeof Records>('src/nic/transfer-record.ts');
  const { flattenTrees } = await load<typeof Trees>('src/state/offload-tree.ts');
  const { sampleTrees } = await load<typeof Helpers>('test/state/helpers.ts');
  const s = flattenTrees(sampleTrees(1))[0]!;
  s.delegated.state = 4;
  s.soft.ooo = [];
  s.soft.sacked = [];
  s.soft.recvSackRecent = [];
  const sab = new SharedArrayBuffer(n * TRANSFER_RECORD_BYTES);
  const records: Records.TransferRecord[] = [];
  for (let i = 0; i < n; i++) {
    const r = new TransferRecord(sab, i * TRANSFER_RECORD_BYTES);
    r.write(s, 1000, 0, 1);
    records.push(r);
  }
  const { sendBuffer: send, recvBuffer: recv } = s.delegated;
  const per: number[] = [];
  const c0 = threadCpuMs();
  let c = c0;
  for (let i = 0; i < n; i++) {
    records[i]!.read(2000, s.path, send, recv);
    if ((i + 1) % 1000 === 0 || i === n - 1) {
      const now = threadCpuMs();
      per.push(Math.round((now - c) * 10) / 10);
      c = now;
    }
  }
  return { root, records: n, perThousandCpuMs: per, totalCpuMs: Math.round((c - c0) * 10) / 10 };
}

export function parseRecordReadFlags(argv: readonly string[]): { records?: number; json?: boolean } {
  return parseBenchFlags(
    new Command('record-read').option('--records <n>', 'records read in the pass', intIn(1, 1_000_000)),
    argv,
  );
}

export function formatRecordRead(r: RecordReadResult): string {
  return `a cold pass of ${r.records} record reads (${r.root}): thread CPU ${r.totalCpuMs} ms; per thousand ${r.perThousandCpuMs.join(', ')}`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseRecordReadFlags, async (o) => {
    const r = await benchRecordRead(o);
    console.log(o.json ? JSON.stringify(r) : formatRecordRead(r));
  });
  process.exit(process.exitCode ?? 0);
}
