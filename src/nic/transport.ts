import type { Worker } from 'node:worker_threads';
import { ChargeMeter, type Clock } from '../core/clock.ts';
import {
  ChimneyError,
  ConnectionError,
  InvalidArgumentError,
  InvalidStateError,
  StateValidationError,
} from '../core/errors.ts';
import type { AddressBook } from '../state/path-state.ts';
import { TWO_32 } from '../state/validate.ts';
import { isEngineVerb, serveEngineVerb } from './engine-verbs.ts';
import { isTreeTransfer, type Transfer } from './nic.ts';
import type { NicEngine } from './nic-engine.ts';
import {
  checkFromWorker,
  type FromWorker,
  unhandled,
  type WireError,
  type WorkerOp,
  WorkerProtocolError,
  type WorkerReply,
  type WorkerRequest,
} from './worker/protocol.ts';
import { packInitiate, unpackKeys } from './worker/transfer-wire.ts';

/**
 * How a NIC's host side reaches the engine that runs its connections: the typed requests of
 * protocol.ts (`WorkerRequest`), one answer each. Two transports: the engine in this thread
 * (`SameThreadTransport`, direct calls on the host's clock) and the engine in a worker
 * (`PortTransport`, over its MessagePort, every answer checked before it is believed).
 */
export interface NicTransport {
  /** Same thread and clock as the host: transfers may also cross as objects (`TreeTransfer`). */
  readonly inProcess: boolean;
  request<R extends WorkerRequest>(r: R): Promise<WorkerReply<R['op']>>;
  /**
   * The engine will answer nothing more (the NIC closed or died): fail every request still
   * waiting for an answer, whose callers then keep what they sent.
   */
  abandon(e: Error): void;
}

/**
 * The engine in the caller's thread. Every request runs in a deferred call on the injected clock,
 * so callers see the ordering a NIC on another thread gives, and a simulation stays on virtual
 * time with nothing it cannot see (no real timer, no message hop).
 */
export class SameThreadTransport implements NicTransport {
  readonly inProcess = true;

  constructor(
    private readonly engineOf: () => NicEngine,
    private readonly clock: Clock,
    /** Charge each request's real duration to the clock (`Clock.elapse`) while this says so. */
    private readonly charge: () => boolean,
  ) {
    this.meter = new ChargeMeter(clock);
  }

  /** Charges a verb's real time, the simulated switch's part of it left out. */
  private readonly meter: ChargeMeter;

  request<R extends WorkerRequest>(r: R): Promise<WorkerReply<R['op']>> {
    return this.run(() => this.serve(r));
  }

  /** Run `fn` in a later turn of the clock, uncharged (frames injected, not a verb). */
  defer(fn: () => void): void {
    this.clock.defer(fn);
  }

  /** Requests whose turn has not come: `abandon` fails them, and their turn then runs nothing. */
  private readonly waiting = new Set<Waiting>();

  /**
   * Run `fn` on the engine in a later turn of the clock, as a request would be; unless the
   * request is abandoned first: it then fails, `fn` never runs, and `abandoned` runs instead.
   */
  run<T>(fn: () => T, abandoned?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const w: Waiting = { reject, abandoned };
      this.waiting.add(w);
      this.clock.defer(() => {
        if (!this.waiting.delete(w)) return;
        try {
          resolve(this.charge() ? this.meter.run(fn) : fn());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  /**
   * Every request whose turn has not come fails with `e`, as a worker's host side fails those it
   * awaits an answer to: run later on the engine its NIC closed (or crashed), a terminate answered
   * that it released nothing, and a transfer took its connections for closed at the source, where
   * a dead NIC's are rebuilt from salvage.
   */
  abandon(e: Error): void {
    const list = [...this.waiting];
    this.waiting.clear();
    for (const w of list) {
      w.abandoned?.();
      w.reject(e);
    }
  }

  /**
   * The worker's handleRequest, in this thread, at once: the same verbs, the same answers, and the
   * one dispatch of all nine on an engine in this thread. `request` runs it in a turn of its own;
   * a NIC that must do its own part in that turn (LocalNic: an initiate in hand, keys leaving)
   * runs it from `run`, and a close runs an initiate in hand with it before the close.
   */
  serve<R extends WorkerRequest>(r: R): WorkerReply<R['op']> {
    // The answer is built here from the request itself, so it is the requested verb's.
    return this.served(r) as WorkerReply<R['op']>;
  }

  private served(r: WorkerRequest): WorkerReply {
    const engine = this.engineOf();
    const id = 0;
    switch (r.op) {
      case 'initiate': {
        const a = r.arg;
        // Blocks and records are memory a worker shares with the host: an engine in this thread
        // has its own rings, and a batch by records names no connection it could install.
        if (a.blocks !== undefined || a.owner !== undefined)
          throw new InvalidArgumentError('an engine in this thread takes no shared blocks or records');
        // holdInput as the worker takes it: a move's settle runs the source's held segments
        // before what this engine's link brought meanwhile (NicEngine.inject's `settled`).
        const result = engine.initiate(a.batch, { prod: a.prod, holdInput: a.holdInput === true });
        // Packed as a worker packs it (0.4 ms for 10,000, and unpacked lazily: a move that
        // installed every connection reads only its size), so both transports answer alike.
        const value = packInitiate(result, [], answerAddresses(engine, a.batch));
        return { t: 'res', id, ok: true, op: r.op, value, installed: value.installed };
      }
      case 'terminate': {
        // By reference, by records or handed on: forms of a worker's shared memory (see initiate).
        if (r.byRef === true || r.records === true || r.hand !== undefined)
          throw new InvalidArgumentError('an engine in this thread hands back its states whole');
        const keys = r.arg === 'all' ? 'all' : unpackKeys(r.arg, engine.addressBook);
        if (r.trees === true) {
          const trees = engine.terminateTrees(keys);
          return { t: 'res', id, ok: true, op: r.op, value: NO_BYTES, trees, freed: [], moved: [] };
        }
        return { t: 'res', id, ok: true, op: r.op, value: engine.terminate(keys), freed: [], moved: [] };
      }
      default:
        if (!isEngineVerb(r)) return unhandled(r, 'request');
        return serveEngineVerb(engine, r, id);
    }
  }
}

/**
 * The table whose handles the IPv6 keys of an initiate's answer are, for an engine in this
 * thread: a batch of trees names its connections by the handles of its own paths' table, which
 * the engine may not have taken (no table yet and the link down, or another table's addresses
 * refused), and an answer packed with the engine's would not hold them. Packed and unpacked with
 * the one table (LocalNic), the answer names the connections the batch named.
 */
export function answerAddresses(engine: NicEngine, batch: Transfer): AddressBook | null {
  if (isTreeTransfer(batch))
    for (const t of batch.trees)
      for (const node of t.paths)
        if (node.path.const.remoteIp >= TWO_32 && node.path.addrs) return node.path.addrs;
  return engine.addressBook;
}

/** The bytes of a terminate answered as trees (shared: nothing writes it). */
const NO_BYTES = new Uint8Array(0);

/**
 * Why a request cannot go over a port, or null: objects of the host's thread (a batch of trees,
 * a terminate answered with trees) mean nothing in another, and a structured clone would hand the
 * worker copies of states the host still runs.
 */
function inProcessOnly(r: WorkerRequest): InvalidArgumentError | null {
  if (r.op === 'initiate' && !(r.arg.batch instanceof Uint8Array))
    return new InvalidArgumentError('initiate: a worker takes a batch of bytes, not trees');
  if (r.op === 'terminate' && r.trees === true)
    return new InvalidArgumentError('terminate: a worker hands back bytes, not trees');
  return null;
}

/** A request of a SameThreadTransport whose turn has not come. */
interface Waiting {
  reject: (e: Error) => void;
  abandoned: (() => void) | undefined;
}

/** An error as the worker sent it, as the class it was thrown as. */
export function fromWireError(w: WireError): ChimneyError {
  if (w.field !== undefined) return new StateValidationError(w.field, w.message.replace(`${w.field}: `, ''));
  if (w.errno !== undefined) return new ConnectionError(w.errno, w.message);
  if (w.code === 'ERR_CHIMNEY_INVALID_ARG') return new InvalidArgumentError(w.message);
  if (w.code === 'ERR_CHIMNEY_INVALID_STATE') return new InvalidStateError(w.message);
  return new ChimneyError(w.code, w.message);
}

/** Everything a worker posts but answers: frames, indications, events, heartbeats. */
export type WorkerNotice = Exclude<FromWorker, { t: 'res' }>;

interface Pending {
  op: WorkerOp;
  resolve: (v: WorkerReply) => void;
  reject: (e: Error) => void;
}

/**
 * The engine in a worker thread, over its MessagePort. A message from the worker is checked
 * (`checkFromWorker`) before anything acts on it: one that is not a `FromWorker` is refused,
 * counted (`protocolErrors`), and fails the request it claims to answer.
 */
export class PortTransport implements NicTransport {
  readonly inProcess = false;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Messages from the worker refused as malformed. */
  protocolErrors = 0;
  lastProtocolError: WorkerProtocolError | null = null;

  constructor(
    private readonly worker: Worker,
    /** Every message that is not an answer, once checked. */
    private readonly notice: (m: WorkerNotice) => void,
    /**
     * Called before an answer is taken: the receiver finishes what it left for later turns of the
     * messages before it (WorkerNic's frames passed up), so whoever awaits the answer finds them done.
     */
    private readonly beforeAnswer: () => void = () => {},
    /** A message refused as malformed, once counted (WorkerNic resyncs its count of frames passed up). */
    private readonly refused: (raw: unknown) => void = () => {},
  ) {
    worker.on('message', (m: unknown) => {
      try {
        checkFromWorker(m, this.opOf);
      } catch (e) {
        if (e instanceof WorkerProtocolError) {
          this.refuse(m, e);
          this.refused(m);
          return;
        }
        throw e;
      }
      if (m.t === 'res') {
        this.beforeAnswer();
        this.answer(m);
      } else this.notice(m);
    });
  }

  request<R extends WorkerRequest>(r: R): Promise<WorkerReply<R['op']>> {
    const refused = inProcessOnly(r);
    if (refused !== null) return Promise.reject(refused);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      // checkFromWorker refuses an answer whose verb is not this one, so the reply is this verb's.
      this.pending.set(id, { op: r.op, resolve: resolve as (v: WorkerReply) => void, reject });
      this.worker.postMessage({ t: 'req', id, ...r });
    });
  }

  /**
   * An answer to a request this side does not send itself (another worker carries it here: a
   * move handed straight between workers): its id, and the answer once the worker gives it.
   */
  expect<O extends WorkerOp>(op: O): { id: number; answer: Promise<WorkerReply<O>> } {
    const id = this.nextId++;
    const answer = new Promise<WorkerReply<O>>((resolve, reject) => {
      this.pending.set(id, { op, resolve: resolve as (v: WorkerReply) => void, reject });
    });
    return { id, answer };
  }

  /** Stop waiting for the answer `id` (its request will never arrive): it fails with `e`. */
  fail(id: number, e: Error): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.reject(e);
  }

  abandon(e: Error): void {
    const list = [...this.pending.values()];
    this.pending.clear();
    for (const p of list) p.reject(e);
  }

  /**
   * A message the worker sent that is not a `FromWorker`: counted, kept as `lastProtocolError`,
   * and if it names a request in flight, that request fails with the error.
   */
  refuse(raw: unknown, error: WorkerProtocolError): void {
    this.protocolErrors++;
    this.lastProtocolError = error;
    if (typeof raw !== 'object' || raw === null || !('id' in raw) || typeof raw.id !== 'number') return;
    const p = this.pending.get(raw.id);
    if (p === undefined) return;
    this.pending.delete(raw.id);
    p.reject(error);
  }

  private readonly opOf = (id: number): WorkerOp | undefined => this.pending.get(id)?.op;

  private answer(m: Extract<FromWorker, { t: 'res' }>): void {
    const p = this.pending.get(m.id);
    // A request given up on (the NIC closed): its late answer has no one to go to.
    if (p === undefined) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m);
    else p.reject(fromWireError(m.error));
  }
}
