/**
 * The failover layer: teams of NICs that keep every connection alive when a link or a NIC dies.
 * What the CLI needs: `buildTeamHost` (a team host on a simulated segment, for `chimney demo`),
 * `Team` with its 'failover' event and `health()`, and the health detectors' types.
 */
export {
  type FailureCause,
  type FailureEvent,
  type HealthOptions,
  NicHealth,
  type NicHealthSnapshot,
  type NicHealthState,
} from './health.ts';
export { ManagerOffloader } from './manager-offloader.ts';
export { ProbeTap } from './probe-tap.ts';
export {
  type FailoverRecord,
  type MoveResult,
  Team,
  type TeamHealth,
  type TeamMember,
  type TeamOffloader,
  type TeamOptions,
} from './team.ts';
export { buildTeamHost, TeamHost, type TeamHostOptions, type TeamSegment } from './team-host.ts';
export { TeamLink } from './team-link.ts';

import type { FailoverRecord } from './team.ts';

/** The 'failover' summary the demo and `--json` print: `{ nic, cause, detectMs, resumeMs, connections }`. */
export interface FailoverSummary {
  nic: string;
  cause: FailoverRecord['cause'];
  detectMs: number;
  resumeMs: number;
  connections: number;
}

export function summarizeFailover(r: FailoverRecord): FailoverSummary {
  return {
    nic: r.nic,
    cause: r.cause,
    detectMs: r.detectMs,
    resumeMs: r.resumeMs,
    connections: r.connections,
  };
}
