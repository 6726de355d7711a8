/**
 * Moving connections between owners: `OffloadManager` carries them host → NIC, NIC → NIC and
 * NIC → host in batches with rollback, under a policy, and turns host-side neighbor and path
 * changes into updates. Failures of background work become counters and a 'warning' event.
 */
export * from './offload-manager.ts';
