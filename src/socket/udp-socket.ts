import { EventEmitter } from 'node:events';
import type { Clock } from '../core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { UdpBinding, UdpLayer } from '../stack/udp.ts';
import { formatIpv4, parseIpv4 } from '../wire/addr.ts';

export interface UdpHost {
  readonly clock: Clock;
  readonly udp: UdpLayer;
}

export interface RemoteInfo {
  address: string;
  family: 'IPv4';
  port: number;
  size: number;
}

/** Behaves like dgram.Socket ('udp4'): bind, send, 'message', 'listening', 'close', 'error'. */
export class UdpSocket extends EventEmitter {
  private binding: UdpBinding | null = null;
  private closed = false;

  constructor(private readonly host: UdpHost) {
    super();
  }

  bind(port = 0, address?: string | (() => void), cb?: () => void): this {
    if (typeof address === 'function') {
      cb = address;
      address = undefined;
    }
    if (this.closed) throw new InvalidStateError('socket is closed');
    if (this.binding) throw new InvalidStateError('socket is already bound');
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new InvalidArgumentError(`port must be an integer 0-65535, got ${port}`);
    const ip = address && address !== '0.0.0.0' ? parseIpv4(address) : 0;
    if (cb) this.once('listening', cb);
    try {
      this.binding = this.host.udp.bind(
        { ip, port },
        (data, rinfo) =>
          this.emit('message', Buffer.from(data.buffer, data.byteOffset, data.byteLength), {
            address: formatIpv4(rinfo.address),
            family: 'IPv4',
            port: rinfo.port,
            size: data.byteLength,
          } satisfies RemoteInfo),
        (err) => this.emit('error', err),
      );
    } catch (e) {
      this.host.clock.defer(() => this.emit('error', e));
      return this;
    }
    this.host.clock.defer(() => this.emit('listening'));
    return this;
  }

  send(
    msg: Uint8Array | string,
    port: number,
    address: string,
    cb?: (err: Error | null, bytes: number) => void,
  ): void {
    if (this.closed) throw new InvalidStateError('socket is closed');
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new InvalidArgumentError(`port must be an integer 1-65535, got ${port}`);
    const ip = parseIpv4(address);
    const data = typeof msg === 'string' ? Buffer.from(msg) : msg;
    if (!this.binding) this.bind(0);
    const ok = this.binding?.send(data, port, ip) ?? false;
    if (cb)
      this.host.clock.defer(() =>
        cb(ok ? null : new InvalidStateError('datagram could not be sent'), data.byteLength),
      );
  }

  address(): { address: string; family: 'IPv4'; port: number } {
    if (!this.binding) throw new InvalidStateError('socket is not bound');
    return { address: formatIpv4(this.binding.localIp), family: 'IPv4', port: this.binding.localPort };
  }

  close(cb?: () => void): this {
    if (this.closed) return this;
    this.closed = true;
    this.binding?.close();
    this.binding = null;
    if (cb) this.once('close', cb);
    this.host.clock.defer(() => this.emit('close'));
    return this;
  }
}
