/**
 * A team member's fault made by one system call from this process, its moment read around the
 * call: `ip link set DEV down` / `nomaster` is a process to start, and on a loaded two-core
 * machine starting it took 40-80 ms (load 17) before the kernel changed anything, time the
 * measurements counted as the team's detection and the downloads' resume. The change is the
 * same one `ip` makes: the interface's IFF_UP cleared (SIOCSIFFLAGS, as `ip link set down`), or
 * the port taken out of its bridge (SIOCBRDELIF, br_del_if, as `ip link set nomaster`).
 */
import {
  AF_INET,
  errnoNames,
  IFF_UP,
  IFNAMSIZ,
  IFREQ_SIZE,
  loadLibc,
  putIfName,
  SIOCGIFFLAGS,
  SIOCGIFINDEX,
  SIOCSIFFLAGS,
  SOCK_DGRAM,
} from '../../src/link/tap-sys.ts';

/** linux/sockios.h: remove an interface from a bridge (ifr_name the bridge, ifr_ifindex the port). */
const SIOCBRDELIF = 0x89a3;

export interface LinkFault {
  /** Epoch ms just before the call and as it returned: the fault took effect between the two. */
  before: number;
  at: number;
}

/** Throws with errno's name when a call fails (no koffi, no root, no such device). */
export function injectLinkFault(kind: 'carrier' | 'reachability', dev: string, bridge: string): LinkFault {
  const lib = loadLibc();
  const fd = lib.socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) throw new Error(`socket: ${errnoNames[lib.errno()] ?? lib.errno()}`);
  const ifr = new Uint8Array(IFREQ_SIZE);
  const v = new DataView(ifr.buffer);
  const call = (req: number, what: string): void => {
    if (lib.ioctlPtr(fd, req, ifr) !== 0)
      throw new Error(`${what}: ${errnoNames[lib.errno()] ?? lib.errno()}`);
  };
  try {
    // Read first, so that the call timed is the fault's alone.
    putIfName(ifr, dev);
    if (kind === 'carrier') {
      call(SIOCGIFFLAGS, `flags of ${dev}`);
      v.setUint16(IFNAMSIZ, v.getUint16(IFNAMSIZ, true) & ~IFF_UP, true);
      const before = Date.now();
      call(SIOCSIFFLAGS, `${dev} down`);
      return { before, at: Date.now() };
    }
    call(SIOCGIFINDEX, `ifindex of ${dev}`);
    const index = v.getInt32(IFNAMSIZ, true);
    putIfName(ifr, bridge);
    v.setInt32(IFNAMSIZ, index, true);
    const before = Date.now();
    call(SIOCBRDELIF, `${dev} out of ${bridge}`);
    return { before, at: Date.now() };
  } finally {
    lib.close(fd);
  }
}
