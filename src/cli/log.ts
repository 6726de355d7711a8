import type { Writable } from 'node:stream';
import { pino } from 'pino';

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
  o: { quiet?: boolean; destination?: Writable } = {},
): ChimneyLog {
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
