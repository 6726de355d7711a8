import type { Writable } from 'node:stream';
import { pino } from 'pino';
import { type Clock, RealClock } from '../core/clock.ts';

/** How `chimney serve` writes its log: lines for people (the default) or one JSON object per event. */
export type LogFormat = 'human' | 'json';
export const LOG_FORMATS: readonly LogFormat[] = ['human', 'json'];

/** Facts of one event (`event` names its kind: failover, move, nic-failure, connection-open, ...). */
export type LogFields = Record<string, unknown> & { event?: string };

export interface ChimneyLog {
  /** Connection events: suppressed by --quiet. */
  info(line: string, fields?: LogFields): void;
  /** Failovers, moves, NIC health: logged even with --quiet. */
  event(line: string, fields?: LogFields): void;
  error(line: string, fields?: LogFields): void;
}

/**
 * The server's log. Human: `chimney: <line>` on stderr, as always. JSON: pino, one object per
 * event on stderr with `time` (ISO), `level` (its name), `msg` (the human line) and the event's
 * fields, written synchronously so nothing is lost when the process exits.
 */
export function createLog(
  format: LogFormat,
  o: {
    quiet?: boolean;
    destination?: Writable;
    /** Times the connection lines' bursts (default: the real clock). */
    clock?: Clock;
    /** Connection lines shown per INFO_WINDOW_MS before the rest are summed up (INFO_BURST_LINES). */
    burstLines?: number;
  } = {},
): ChimneyLog {
  const log = createRawLog(format, o);
  if (o.quiet) return log;
  return { ...log, info: limitBursts(log, o.clock ?? new RealClock(), o.burstLines ?? INFO_BURST_LINES) };
}

/**
 * Connection lines shown within one window before the others are only counted: a burst of
 * thousands of accepts would otherwise write two lines per connection, synchronously, on the
 * thread that serves them.
 */
export const INFO_BURST_LINES = 20;
export const INFO_WINDOW_MS = 1000;

/**
 * `log.info` that shows at most `limit` lines per window and then, at the window's end, one line
 * with how many it left out, by event.
 */
function limitBursts(log: ChimneyLog, clock: Clock, limit: number): ChimneyLog['info'] {
  let windowEnd = Number.NEGATIVE_INFINITY;
  let shown = 0;
  let held = 0;
  const byEvent: Record<string, number> = {};
  const flush = (): void => {
    if (held === 0) return;
    const kinds = Object.entries(byEvent)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    log.event(`${held} more connection line(s) not shown (${kinds})`, {
      event: 'log-burst',
      suppressed: held,
      byEvent: { ...byEvent },
    });
    held = 0;
    for (const k of Object.keys(byEvent)) delete byEvent[k];
  };
  const timer = clock.createTimer(flush).unref();
  return (line, fields) => {
    const now = clock.now();
    if (now >= windowEnd) {
      timer.disarm();
      flush();
      windowEnd = now + INFO_WINDOW_MS;
      shown = 0;
    }
    if (shown < limit) {
      shown++;
      log.info(line, fields);
      return;
    }
    held++;
    const kind = fields?.event ?? 'other';
    byEvent[kind] = (byEvent[kind] ?? 0) + 1;
    if (!timer.armed) timer.armAt(windowEnd);
  };
}

function createRawLog(format: LogFormat, o: { quiet?: boolean; destination?: Writable }): ChimneyLog {
  if (format === 'json') {
    const logger = pino(
      {
        base: { pid: process.pid },
        timestamp: pino.stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
      },
      o.destination ?? pino.destination({ fd: 2, sync: true }),
    );
    return {
      info: (line, fields) => {
        if (!o.quiet) logger.info(fields ?? {}, line);
      },
      event: (line, fields) => logger.info(fields ?? {}, line),
      error: (line, fields) => logger.error(fields ?? {}, line),
    };
  }
  const out = o.destination ?? process.stderr;
  return {
    info: (line) => {
      if (!o.quiet) out.write(`chimney: ${line}\n`);
    },
    event: (line) => out.write(`chimney: ${line}\n`),
    error: (line) => out.write(`chimney: error: ${line}\n`),
  };
}
