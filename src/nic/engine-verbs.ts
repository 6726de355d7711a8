import type { NicEngine } from './nic-engine.ts';
import { unhandled, type WorkerReply, type WorkerRequest } from './worker/protocol.ts';
import { unpackKeys } from './worker/transfer-wire.ts';

/**
 * The verbs an engine answers from its own tables, touching no connection's memory: the same
 * wherever the engine runs, so one function serves them for both transports (`serveEngineVerb`).
 * Initiate and terminate are not among them: what they carry lives in the engine's own rings
 * (same thread) or in blocks the host shares with a worker, and each side crosses it its own way.
 */
export type EngineVerb = Extract<
  WorkerRequest,
  { op: 'update' | 'invalidate' | 'query' | 'progressScan' | 'takeQueued' | 'dropFrozen' | 'counters' }
>;

const ENGINE_VERBS: { readonly [O in EngineVerb['op']]: true } = {
  update: true,
  invalidate: true,
  query: true,
  progressScan: true,
  takeQueued: true,
  dropFrozen: true,
  counters: true,
};

export function isEngineVerb(r: WorkerRequest): r is EngineVerb {
  return Object.hasOwn(ENGINE_VERBS, r.op);
}

/** What an engine's host keeps beside it that a verb must see (a worker's connections taken unbuilt). */
export interface EngineVerbHooks {
  /** Run first, before the verb reads or changes a connection: a worker builds those it touches. */
  before?(r: EngineVerb): void;
  /** Counters of the engine's host, after the engine's own (a worker's blocks, pool, heap). */
  moreCounters?(): Record<string, number>;
}

/**
 * One of `EngineVerb`'s requests served by `engine`, answered as the request `id`: the one
 * dispatch of these verbs, which `SameThreadTransport` and a worker's request handler both call.
 */
export function serveEngineVerb(
  engine: NicEngine,
  r: EngineVerb,
  id: number,
  hooks?: EngineVerbHooks,
): WorkerReply {
  hooks?.before?.(r);
  switch (r.op) {
    case 'update':
      engine.update(r.arg);
      return { t: 'res', id, ok: true, op: r.op, value: undefined };
    case 'invalidate':
      engine.invalidate(r.arg);
      return { t: 'res', id, ok: true, op: r.op, value: undefined };
    case 'query':
      return { t: 'res', id, ok: true, op: r.op, value: engine.query(r.arg) };
    case 'progressScan':
      return { t: 'res', id, ok: true, op: r.op, value: engine.progressScan() };
    case 'takeQueued': {
      const keys = unpackKeys(r.arg, engine.addressBook);
      const value = engine.takeQueued(keys);
      // In the same request: a transfer's settle needs both (HostNic.takeQueued).
      if (r.drop === true) engine.dropFrozen(keys);
      return { t: 'res', id, ok: true, op: r.op, value };
    }
    case 'dropFrozen':
      engine.dropFrozen(unpackKeys(r.arg, engine.addressBook));
      return { t: 'res', id, ok: true, op: r.op, value: undefined };
    case 'counters': {
      const own = engine.counters.snapshot();
      const value = hooks?.moreCounters === undefined ? own : { ...own, ...hooks.moreCounters() };
      return { t: 'res', id, ok: true, op: r.op, value };
    }
    default:
      return unhandled(r, 'request');
  }
}
