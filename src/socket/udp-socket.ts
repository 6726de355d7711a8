import { EventEmitter } from 'node:events';
import type { Clock } from '../core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { type AddressTable, TWO_32 } from '../stack/address-table.ts';
import type { UdpBinding, UdpLayer } from '../stack/udp.ts';
import { formatIpv4, parseIpv4 } from '../wire/addr.ts';

export interface UdpHost {
  readonly clock: Clock;
  readonly udp: UdpLayer;
  /** The stack's address handles (absent: IPv4 only). */
  readonly addrs?: AddressTable;
}

export interface RemoteInfo {
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
  size: number;
}

/**
 * Behaves like dgram.Socket: bind, send, 'message', 'listening', 'close', 'error'. A 'udp6'
 * socket binds to '::' by default and then takes IPv4 datagrams too, their sources shown as
 * ::ffff:a.b.c.d with family IPv6, as Node shows them.
 */
export class UdpSocket extends EventEmitter {
  private binding: UdpBinding | null = null;
  private closed = false;

  constructor(
    private readonly host: UdpHost,
    readonly type: 'udp4' | 'udp6' = 'udp4',
  ) {
    super();
    if (type !== 'udp4' && type !== 'udp6')
      throw new InvalidArgumentError(`bad socket type '${String(type)}'`);
  }

  private format(ip: number): { address: string; family: 'IPv4' | 'IPv6' } {
    if (ip >= TWO_32) return { address: this.host.addrs?.format(ip) ?? '::', family: 'IPv6' };
    if (this.type === 'udp6') return { address: `::ffff:${formatIpv4(ip)}`, family: 'IPv6' };
    return { address: formatIpv4(ip), family: 'IPv4' };
  }

  private checkFamily(address: string): void {
    if (this.type === 'udp4' && address.includes(':'))
      throw new InvalidArgumentError(`a udp4 socket takes IPv4 addresses only, not '${address}' (EINVAL)`);
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
    const text = address || (this.type === 'udp6' ? '::' : '0.0.0.0');
    this.checkFamily(text);
    const ip = text === '0.0.0.0' ? 0 : this.host.addrs ? text : parseIpv4(text);
    if (cb) this.once('listening', cb);
    try {
      this.binding = this.host.udp.bind(
        { ip, port },
        // Formatted now: an IPv6 source's handle is only valid during the call.
        (data, rinfo) =>
          this.emit('message', Buffer.from(data.buffer, data.byteOffset, data.byteLength), {
            ...this.format(rinfo.address),
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
    if (typeof address !== 'string') throw new InvalidArgumentError('send needs an address');
    this.checkFamily(address);
    const ip = this.host.addrs ? address : parseIpv4(address);
    const data = typeof msg === 'string' ? Buffer.from(msg) : msg;
    if (!this.binding) this.bind(0);
    const ok = this.binding?.send(data, port, ip) ?? false;
    if (cb)
      this.host.clock.defer(() =>
        cb(ok ? null : new InvalidStateError('datagram could not be sent'), data.byteLength),
      );
  }

  address(): { address: string; family: 'IPv4' | 'IPv6'; port: number } {
    if (!this.binding) throw new InvalidStateError('socket is not bound');
    const ip = this.binding.localIp;
    const { address, family } =
      ip >= TWO_32 ? this.format(ip) : { address: formatIpv4(ip), family: 'IPv4' as const };
    return { address, family, port: this.binding.localPort };
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
