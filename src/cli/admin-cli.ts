import type { Stack } from '../stack/stack.ts';
import type { TeamHost } from '../team/team-host.ts';
import { AdminServer, parseAdminAddress } from './admin.ts';
import { stackMetrics } from './admin-source.ts';
import type { StatusReporter } from './status.ts';

/** The admin endpoint's command-line flags. */
export interface AdminFlags {
  admin?: string;
  adminPublic?: boolean;
}

/** The checked --admin address, or exit with the reason (before anything is opened). */
export function adminAddress(cmd: string, o: AdminFlags): { host: string; port: number } {
  try {
    return parseAdminAddress(o.admin ?? '', o.adminPublic === true);
  } catch (e) {
    process.stderr.write(`chimney ${cmd}: ${(e as Error).message}\n`);
    process.exit(2);
  }
}

/** Start the admin endpoint for a running server; a failure to listen is logged, not fatal. */
export async function startAdmin(
  cmd: string,
  at: { host: string; port: number },
  stack: Stack,
  reporter: StatusReporter,
  team: TeamHost | undefined,
  log: (line: string) => void,
): Promise<AdminServer | null> {
  try {
    const admin = await AdminServer.start(stackMetrics(stack, reporter, team), at);
    log(`admin endpoint on ${admin.url}/ (/metrics, /api/status)`);
    return admin;
  } catch (e) {
    process.stderr.write(`chimney ${cmd}: --admin ${at.host}:${at.port}: ${(e as Error).message}\n`);
    return null;
  }
}
