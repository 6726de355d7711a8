import { formatStatus, queryStatus, type StatusSnapshot } from './control.ts';

export interface WatchOptions {
  control: string;
  intervalMs: number;
  /** Stop after this many refreshes (0: until interrupted), like top -n. */
  count: number;
}

const CLEAR = '\x1b[H\x1b[2J';
const ALT_ON = '\x1b[?1049h\x1b[?25l';
const ALT_OFF = '\x1b[?25h\x1b[?1049l';

/**
 * One screen of `status --watch`: cursor home and clear, a header line, then the status view cut
 * to the terminal's size (a line longer than the width is cut, lines past the height are dropped
 * with a note of how many), so the frame overwrites the last one in place.
 */
export function renderFrame(
  s: StatusSnapshot | Error,
  at: Date,
  size: { rows: number; cols: number },
): string {
  const head = `chimney status  ${at.toISOString().slice(11, 19)}  (every refresh; q or Ctrl-C quits)`;
  const body = s instanceof Error ? `error: ${s.message}` : formatStatus(s);
  let lines = [head, '', ...body.split('\n')];
  if (lines.length > size.rows) {
    const hidden = lines.length - (size.rows - 1);
    lines = [...lines.slice(0, size.rows - 1), `… ${hidden} more lines`];
  }
  return CLEAR + lines.map((l) => (l.length > size.cols ? l.slice(0, size.cols) : l)).join('\n');
}

/**
 * `chimney status --watch`: the status view refreshed in place like top, on the terminal's
 * alternate screen. Without a terminal, each refresh is printed after the last one.
 */
export async function watchStatus(o: WatchOptions): Promise<void> {
  const out = process.stdout;
  const tty = out.isTTY === true;
  let stop = false;
  let wake: () => void = () => {};
  const quit = (): void => {
    stop = true;
    wake();
  };
  // A reader that went away (| head) ends the watch, as it would end top.
  out.on('error', quit);
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
  const stdin = process.stdin;
  if (tty && stdin.isTTY) {
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', (d: Buffer) => {
      if (d[0] === 0x71 || d[0] === 0x03) quit(); // q or Ctrl-C (raw mode turns off SIGINT)
    });
  }
  if (tty) out.write(ALT_ON);
  try {
    for (let n = 0; !stop && (o.count === 0 || n < o.count); n++) {
      if (n > 0)
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, o.intervalMs);
        });
      if (stop || out.destroyed) break;
      const s = await queryStatus(o.control).catch((e: Error) => e);
      if (tty) out.write(renderFrame(s, new Date(), { rows: out.rows ?? 24, cols: out.columns ?? 80 }));
      else out.write(`${n > 0 ? '\n' : ''}${s instanceof Error ? `error: ${s.message}` : formatStatus(s)}\n`);
    }
  } finally {
    if (tty) out.write(ALT_OFF);
    if (tty && stdin.isTTY) {
      stdin.setRawMode(false);
      stdin.pause();
    }
    out.off('error', quit);
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
  }
}
