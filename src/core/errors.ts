import { getSystemErrorMap } from 'node:util';

/**
 * Every error Chimney raises for bad input carries a stable `code`, like Node's own errors,
 * so callers can branch on it without matching message text.
 */
export class ChimneyError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A public call got an argument it cannot use (bad address, port out of range, ...). */
export class InvalidArgumentError extends ChimneyError {
  constructor(message: string) {
    super('ERR_CHIMNEY_INVALID_ARG', message);
  }
}

/** The call is not allowed in the object's current state (write after end, listen twice, ...). */
export class InvalidStateError extends ChimneyError {
  constructor(message: string) {
    super('ERR_CHIMNEY_INVALID_STATE', message);
  }
}

/**
 * libuv's error numbers by name, as Node reports them in `errno` (negative: -104 for ECONNRESET on
 * Linux, the kernel's own numbers there; libuv's on other systems).
 */
let errnoByName: Map<string, number> | null = null;
function errnoOf(name: string): number | undefined {
  if (!errnoByName) {
    errnoByName = new Map();
    for (const [n, [errName]] of getSystemErrorMap()) errnoByName.set(errName, n);
  }
  return errnoByName.get(name);
}

/**
 * A connection-level failure reported to the application, modelled on Node's socket errors:
 * `code` is the name (ECONNRESET, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...), `errno` its
 * negative number, as on a net.Socket's error (and as Node's tls reads a wrapped stream's write
 * errors by `code`).
 */
export class ConnectionError extends ChimneyError {
  readonly errno: number | undefined;
  /**
   * Set by the socket that reports it, as Node sets its own: the call that would have failed
   * ('connect', 'read', 'write') and, for 'connect', the address and port it tried.
   */
  syscall?: string;
  address?: string;
  port?: number;
  constructor(code: string, message: string) {
    super(code, message);
    this.errno = errnoOf(code);
  }
}

/** An address or port is already taken. */
export class AddressInUseError extends ChimneyError {
  constructor(message: string) {
    super('EADDRINUSE', message);
  }
}

/** A state object or transfer failed validation; nothing was installed. */
export class StateValidationError extends ChimneyError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('ERR_CHIMNEY_BAD_STATE', `${field}: ${message}`);
  }
}

/**
 * A link (TAP device, ...) could not be opened or configured. `code` is the errno-style reason
 * (ENOENT, EACCES, EPERM, EBUSY, ENODEV, EINVAL, ...), the message says what to do about it.
 */
export class LinkError extends ChimneyError {}
