/**
 * Offload targets. `Nic` is the contract (initiate, terminate, update, invalidate, query, and the
 * indications); `NicEngine` runs a link, a TcpLayer and the installed trees in any thread;
 * `LocalNic` runs one in the caller's thread, `WorkerNic` in a worker thread (./worker holds its
 * entry, message protocol and bootstrap). hard-state.ts is the per-connection record in shared
 * memory from which a dead NIC's connections are rebuilt.
 */
export * from './hard-state.ts';
export * from './local-nic.ts';
export * from './nic.ts';
export * from './nic-engine.ts';
export * from './nic-group-link.ts';
export * from './worker-nic.ts';
