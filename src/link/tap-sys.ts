/**
 * The few libc calls a TAP device needs (open flags, ioctl, read, write, poll, pipe), reached
 * through koffi so that no native addon has to be compiled. Loaded lazily: importing this module
 * costs nothing on a machine that never opens a TAP.
 *
 * Every number below is copied from the Linux uapi headers named next to it; they are part of the
 * kernel ABI and do not change between kernel versions.
 */
import { createRequire } from 'node:module';

// linux/if_tun.h — ioctl numbers are _IOW('T', n, int) = 0x40045400 | n, _IOR(...) = 0x80045400 | n.
export const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
export const TUNSETPERSIST = 0x400454cb; // _IOW('T', 203, int)
export const TUNGETFEATURES = 0x800454cf; // _IOR('T', 207, unsigned int)
export const TUNSETOFFLOAD = 0x400454d0; // _IOW('T', 208, unsigned int)
export const TUNSETVNETHDRSZ = 0x400454d8; // _IOW('T', 216, int)
export const TUNSETVNETLE = 0x400454dc; // _IOW('T', 220, int)

// linux/if_tun.h — TUNSETIFF ifr_flags.
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_NAPI = 0x0010;
export const IFF_NAPI_FRAGS = 0x0020;

// linux/if_tun.h — TUNSETOFFLOAD features.
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;

// linux/sockios.h — interface ioctls on any socket.
export const SIOCGIFFLAGS = 0x8913;
export const SIOCSIFFLAGS = 0x8914;
export const SIOCGIFMTU = 0x8921;
export const SIOCSIFMTU = 0x8922;
export const SIOCGIFINDEX = 0x8933;

// linux/if.h — net_device_flags (the short ifr_flags).
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;

// linux/if.h — struct ifreq: char ifr_name[IFNAMSIZ = 16] followed by a 24-byte union.
export const IFNAMSIZ = 16;
export const IFREQ_SIZE = 40;

// asm-generic/fcntl.h, bits/poll.h, asm-generic/errno*.h, bits/socket.h (x86-64 and arm64 agree).
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
export const POLLIN = 0x1;
export const AF_INET = 2;
export const SOCK_DGRAM = 2;

export const errnoNames: Record<number, string> = {
  1: 'EPERM',
  2: 'ENOENT',
  4: 'EINTR',
  5: 'EIO',
  6: 'ENXIO',
  9: 'EBADF',
  11: 'EAGAIN',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  17: 'EEXIST',
  19: 'ENODEV',
  22: 'EINVAL',
  25: 'ENOTTY',
  77: 'EBADFD',
  105: 'ENOBUFS',
};
export const EAGAIN = 11;
export const EINTR = 4;

type Fn = ((...args: unknown[]) => number) & {
  async: (...args: unknown[]) => void;
};

export interface Libc {
  open(path: string, flags: number): number;
  close(fd: number): number;
  /** ioctl whose argument points to memory (ifreq, unsigned int). */
  ioctlPtr(fd: number, req: number, arg: Uint8Array): number;
  /** ioctl whose argument is an integer passed by value (TUNSETOFFLOAD, TUNSETPERSIST). */
  ioctlInt(fd: number, req: number, arg: number): number;
  read(fd: number, buf: Uint8Array, len: number): number;
  write(fd: number, buf: Uint8Array, len: number): number;
  /** writev(2) with an iovec array in native memory (its address, from `nativeBytes`). */
  writev(fd: number, iov: bigint, count: number): number;
  /** `n` bytes of native memory that never move: their address and a view of them. */
  nativeBytes(n: number): { addr: bigint; bytes: Uint8Array };
  /** A view of `n` bytes of native memory made elsewhere (another thread's nativeBytes). */
  nativeView(addr: bigint, n: number): Uint8Array;
  freeNative(addr: bigint): void;
  socket(domain: number, type: number, proto: number): number;
  pipe2(fds: Int32Array, flags: number): number;
  /** A new descriptor (close-on-exec) for what `fd` refers to: fcntl(F_DUPFD_CLOEXEC). */
  dup(fd: number): number;
  /** dup3(2): `to` made to refer to what `from` does (atomically, `to` closed first), close-on-exec. */
  dup3(from: number, to: number): number;
  /** poll() on this thread (timeout 0 for a mere look). */
  poll(fds: Uint8Array, nfds: number, timeoutMs: number): number;
  /** poll() on the libuv thread pool; `cb` gets the count of ready fds or -1. */
  pollAsync(fds: Uint8Array, nfds: number, timeoutMs: number, cb: (err: unknown, n: number) => void): void;
  errno(): number;
}

let libc: Libc | null = null;

/** Throws (plain Error) if koffi or libc cannot be loaded; callers wrap it in a LinkError. */
export function loadLibc(): Libc {
  if (libc) return libc;
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as {
    load(name: string): { func(decl: string): Fn };
    errno(): number;
    alloc(type: string, n: number): bigint;
    view(ptr: bigint, n: number): ArrayBuffer;
    free(ptr: bigint): void;
  };
  const lib = koffi.load('libc.so.6');
  const open = lib.func('int open(const char *path, int flags)');
  const close = lib.func('int close(int fd)');
  const ioctlPtr = lib.func('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *arg)');
  const ioctlInt = lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)');
  const read = lib.func('long read(int fd, _Out_ void *buf, unsigned long len)');
  const write = lib.func('long write(int fd, const void *buf, unsigned long len)');
  const writev = lib.func('long writev(int fd, void *iov, int count)');
  const socket = lib.func('int socket(int domain, int type, int proto)');
  const pipe2 = lib.func('int pipe2(_Out_ int *fds, int flags)');
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
  const fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
  const dup3 = lib.func('int dup3(int from, int to, int flags)');
  libc = {
    open: (p, f) => open(p, f),
    close: (fd) => close(fd),
    ioctlPtr: (fd, req, arg) => ioctlPtr(fd, req, arg),
    ioctlInt: (fd, req, arg) => ioctlInt(fd, req, arg),
    read: (fd, buf, len) => read(fd, buf, len),
    write: (fd, buf, len) => write(fd, buf, len),
    writev: (fd, iov, count) => writev(fd, iov, count),
    nativeBytes: (n) => {
      const addr = koffi.alloc('uint8_t', n);
      return { addr, bytes: new Uint8Array(koffi.view(addr, n)) };
    },
    nativeView: (addr, n) => new Uint8Array(koffi.view(addr, n)),
    freeNative: (addr) => koffi.free(addr),
    socket: (d, t, p) => socket(d, t, p),
    pipe2: (fds, flags) => pipe2(fds, flags),
    dup: (fd) => fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0),
    dup3: (from, to) => dup3(from, to, O_CLOEXEC),
    poll: (fds, nfds, timeout) => poll(fds, nfds, timeout),
    pollAsync: (fds, nfds, timeout, cb) => poll.async(fds, nfds, timeout, cb),
    errno: () => koffi.errno(),
  };
  return libc;
}

/** Fill `ifr` (IFREQ_SIZE bytes) with a NUL-terminated interface name and zeroes. */
export function putIfName(ifr: Uint8Array, name: string): void {
  ifr.fill(0);
  for (let i = 0; i < name.length && i < IFNAMSIZ - 1; i++) ifr[i] = name.charCodeAt(i);
}

/** The NUL-terminated interface name the kernel wrote into `ifr`. */
export function getIfName(ifr: Uint8Array): string {
  let s = '';
  for (let i = 0; i < IFNAMSIZ && ifr[i] !== 0; i++) s += String.fromCharCode(ifr[i]!);
  return s;
}
