import type { AddressBook } from '../../state/path-state.ts';
import { EtherType } from '../../wire/ethernet.ts';
import { ethL3Offset, ethType, ipVersion, ipv4HeaderLen } from '../../wire/fields.ts';
import { packetTuple, TUPLE_FIRST_FRAGMENT, TUPLE_HIDDEN, TUPLE_READ, tuple } from '../frame-tuple.ts';
import type { ConnKey } from '../nic.ts';
import { OldestFirst } from '../oldest-first.ts';

/**
 * The worker's connections by four-tuple, found from a frame without decoding it twice. Keyed by
 * both ports first (cheap, and nearly always unique), then told apart by both addresses: two
 * connections may share their ports with different peers (or local addresses), and a frame
 * filed under the wrong one would publish one connection's snd.max into the other's record.
 */
export class ConnIndex<T extends { readonly key: ConnKey }> {
  /**
   * By `portsKey`: a small integer, where both ports side by side (up to 2^32) were a boxed
   * number, allocated by every add, remove and frame looked up. Lossy, so a list can hold other
   * ports (of the three pairs its key also names) and `get` compares the ports too.
   */
  private readonly byPorts = new Map<number, Bucket<T>>();
  /**
   * Lists dropped from the map, for the next new key: a connection moved away and back would
   * otherwise leave one array behind per move.
   */
  private readonly spare: Bucket<T>[] = [];
  private count = 0;
  private made = 0;
  /** The most connections held at once: how many emptied lists may stay in the map. */
  private peak = 0;
  /**
   * Lists that stay in the map empty, under their key, for the connection's return. A `Map` whose
   * keys leave and come back (every connection of a worker leaves on a move away, and returns
   * on the move back) shrinks and grows its table step by step, rehashing at each: 0.5-3 µs an
   * add or a remove against 40-170 ns with the keys kept (10,000 leaving and coming back).
   */
  /**
   * In the order they emptied: past the bound, a remove drops the oldest one, one step. A walk of
   * the map that dropped them all at once took 3-15 ms inside one remove at a peak of 10,000, a
   * worker's whole turn.
   */
  private readonly empty = new OldestFirst<Bucket<T>>();
  private dropped = 0;

  /**
   * `addrs`: the table the keys' IPv6 handles belong to, through which an IPv6 frame's addresses
   * are found (none: IPv6 frames belong to no connection here).
   */
  constructor(private readonly addrs: () => AddressBook | null = () => null) {}

  get size(): number {
    return this.count;
  }

  /** Lists ever allocated (the rest were spares taken up again). */
  get listsMade(): number {
    return this.made;
  }

  /** Keys the map has held, with a connection or an emptied list kept for one. */
  get places(): number {
    return this.byPorts.size;
  }

  /** Keys ever deleted from the map (emptied lists dropped past the bound, see `dropOldest`). */
  get placesDropped(): number {
    return this.dropped;
  }

  add(v: T): void {
    const p = portsKey(v.key.localPort, v.key.remotePort);
    const b = this.byPorts.get(p);
    if (b !== undefined) {
      if (b.items.length === 0) this.empty.unlink(b);
      b.items.push(v);
    } else {
      let fresh = this.spare.pop();
      if (fresh === undefined) {
        // Made holding its one connection: a list made empty and pushed to takes room for 17 (V8
        // grows an array by half plus 16), 150 bytes kept per connection for the one in 10,000
        // whose ports another shares, and a survivor's install of 10,000 unbuilt makes them all
        // at once, for its scavenges to copy.
        fresh = { items: [v], key: p, older: null, newer: null };
        this.made++;
      } else {
        fresh.key = p;
        fresh.items.push(v);
      }
      this.byPorts.set(p, fresh);
    }
    if (++this.count > this.peak) this.peak = this.count;
  }

  remove(v: T): void {
    const p = portsKey(v.key.localPort, v.key.remotePort);
    const b = this.byPorts.get(p);
    const list = b?.items;
    const at = list === undefined ? -1 : list.indexOf(v);
    if (at < 0) return;
    // Order within a list does not matter: the last one takes the removed one's place.
    const last = list!.pop()!;
    if (at < list!.length) list![at] = last;
    this.count--;
    if (list!.length !== 0) return;
    // Emptied, the list stays under its key for the connection's return (see `empty`), the
    // newest of them; past the bound the oldest goes.
    this.empty.push(b!);
    if (this.empty.size > Math.max(SPARE_LISTS, this.peak)) this.dropOldest();
  }

  /**
   * Drop the list emptied longest ago from the map (into the spares), once more emptied lists stay
   * than the index has held connections at once: the tuples that pass through a long-lived worker
   * are not bounded, its map must be. One list per remove, so no remove pays for many.
   */
  private dropOldest(): void {
    const b = this.empty.oldest!;
    this.empty.unlink(b);
    this.byPorts.delete(b.key);
    this.dropped++;
    if (this.spare.length < SPARE_LISTS) this.spare.push(b);
  }

  /** IPv4 addresses compared as u32, whichever sign the caller's numbers have; IPv6 handles whole. */
  get(localIp: number, localPort: number, remoteIp: number, remotePort: number): T | undefined {
    const list = this.byPorts.get(portsKey(localPort, remotePort))?.items;
    if (list === undefined) return undefined;
    const l = addr(localIp);
    const r = addr(remoteIp);
    for (let i = 0; i < list.length; i++) {
      const k = list[i]!.key;
      if (
        k.localPort === localPort &&
        k.remotePort === remotePort &&
        addr(k.localIp) === l &&
        addr(k.remoteIp) === r
      )
        return list[i];
    }
    return undefined;
  }

  /**
   * The connection an Ethernet frame carrying a TCP segment belongs to: received (`inbound`, our
   * port is the destination) or sent. Undefined for anything else, or a frame too short to say.
   */
  ofFrame(frame: Uint8Array, inbound: boolean): T | undefined {
    if (this.count === 0 || frame.length < 54) return undefined;
    const ip = ethL3Offset(frame);
    const type = ethType(frame);
    if (type !== EtherType.IPV4 && type !== EtherType.IPV6) return undefined;
    const read = packetTuple(frame, ip, type === EtherType.IPV6, this.addrs());
    // A first fragment carries its segment's ports: the connection it is for is known.
    if (read !== TUPLE_READ && read !== TUPLE_FIRST_FRAGMENT) return undefined;
    const { localIp, localPort, remoteIp, remotePort } = tuple;
    return inbound
      ? this.get(localIp, localPort, remoteIp, remotePort)
      : this.get(remoteIp, remotePort, localIp, localPort);
  }

  /**
   * The connection an IP packet the host injects is for (one it held for a connection in transit:
   * our end is its destination). Undefined when it is for none of these; null when this cannot
   * say (a fragment, IPv6 with a header between it and TCP), and every one may be its own.
   */
  ofPacket(p: Uint8Array): T | undefined | null {
    if (this.count === 0) return undefined;
    let read: number;
    if (p.length >= 40 && p[0]! >>> 4 === 6) read = packetTuple(p, 0, true, this.addrs());
    else if (p.length < 20 || p[0]! >>> 4 !== 4) return undefined;
    else read = packetTuple(p, 0, false, null);
    if (read === TUPLE_HIDDEN || read === TUPLE_FIRST_FRAGMENT) return null;
    if (read !== TUPLE_READ) return undefined;
    return this.get(tuple.localIp, tuple.localPort, tuple.remoteIp, tuple.remotePort);
  }

  /**
   * The connection an ICMP or ICMPv6 error quotes, its message (type, code, four bytes) at
   * frame[icmp]: the quoted packet is one we sent, so its source is our end. The quoted IP header
   * and 8 bytes behind it must be there (RFC 792, RFC 4443 2.4), only the ports are read.
   * Undefined when it quotes none of these connections (another protocol, a later fragment, an
   * IPv6 extension header, which our TCP segments never carry, an address not in the table); null
   * when the quote is too short or not an IP header of the outer packet's family.
   */
  ofQuote(frame: Uint8Array, icmp: number, v6: boolean): T | undefined | null {
    const q = icmp + 8;
    if (v6) {
      if (frame.length < q + 48 || ipVersion(frame, q) !== 6) return null;
    } else {
      if (frame.length < q + 28 || ipVersion(frame, q) !== 4) return null;
      const hl = ipv4HeaderLen(frame, q);
      if (hl < 20 || frame.length < q + hl + 8) return null;
    }
    const read = packetTuple(frame, q, v6, v6 ? this.addrs() : null);
    if (read !== TUPLE_READ && read !== TUPLE_FIRST_FRAGMENT) return undefined;
    // Sent by us: the quoted destination is the peer.
    return this.get(tuple.remoteIp, tuple.remotePort, tuple.localIp, tuple.localPort);
  }
}

/** The connections under one key of the map; while empty, a link in the order of emptied lists. */
interface Bucket<T> {
  readonly items: T[];
  key: number;
  older: Bucket<T> | null;
  newer: Bucket<T> | null;
}

/**
 * Spare lists kept, and the least number of emptied lists left in the map: a worker's batch is
 * at most a few hundred connections.
 */
const SPARE_LISTS = 1024;

/**
 * Both ports in 30 bits, a small integer (V8 boxes a number of 2^30 or more): the local port's
 * 16 bits above the remote port's, overlapping it by two bits, so four pairs share a key.
 */
function portsKey(localPort: number, remotePort: number): number {
  return ((localPort << 14) ^ remotePort) & 0x3fffffff;
}

function addr(ip: number): number {
  return ip > 0xffffffff ? ip : ip >>> 0;
}
