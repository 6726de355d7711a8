/*
 * Multicast listener discovery messages over ICMPv6: MLDv2 queries and reports (RFC 3810 5) and
 * the MLDv1 query, report and done (RFC 2710 3) a host must still speak to an MLDv1 querier
 * (RFC 3810 8). The caller has decoded and checksummed the ICMPv6 message with decodeIcmpv6 and
 * hands its bytes here; the IPv6-level rules (link-local source, hop limit 1, router alert) belong
 * to the receiver. Decoders fill caller-owned objects and never allocate: a report keeps at most
 * MLD_MAX_RECORDS records and a query MLD_MAX_SOURCES sources, and counts the rest.
 */
import { copyIpv6, readU16, writeU16 } from './addr.ts';
import type { DecodeError } from './decode-error.ts';
import { createIcmpv6Header, encodeIcmpv6 } from './icmpv6.ts';

export const MldType = {
  QUERY: 130,
  V1_REPORT: 131,
  V1_DONE: 132,
  V2_REPORT: 143,
} as const;

/** Multicast address record types (RFC 3810 5.2.12). */
export const MldRecordType = {
  MODE_IS_INCLUDE: 1,
  MODE_IS_EXCLUDE: 2,
  CHANGE_TO_INCLUDE: 3,
  CHANGE_TO_EXCLUDE: 4,
  ALLOW_NEW_SOURCES: 5,
  BLOCK_OLD_SOURCES: 6,
} as const;

/** An MLDv1 query is exactly 24 bytes, an MLDv2 query at least 28 (RFC 3810 8.1). */
export const MLD_V1_LENGTH = 24;
export const MLD_V2_QUERY_MIN = 28;
/** Records kept per decoded report, and sources kept per decoded query. */
export const MLD_MAX_RECORDS = 32;
export const MLD_MAX_SOURCES = 16;

export interface MldRecord {
  type: number;
  /** Sources listed in the record (their addresses are not kept). */
  sourceCount: number;
  readonly group: Uint8Array;
}

export interface MldMessage {
  type: number;
  /** 1 or 2: from a query's length (RFC 3810 8.1), from a report's type. */
  version: number;
  // ---- query ----
  /** Maximum response delay in milliseconds, the exponential form of MLDv2 expanded (5.1.3). */
  maxResponseMs: number;
  /** The queried group (a multicast address-specific query), or :: (a general query). Also the group of an MLDv1 report or done. */
  readonly group: Uint8Array;
  /** S flag: routers suppress their timer updates (5.1.7). */
  suppress: boolean;
  /** Querier's robustness variable, 0 when it exceeds 7 (5.1.8). */
  qrv: number;
  /** Querier's query interval in seconds, the exponential form expanded (5.1.9). */
  qqiS: number;
  /** Sources of a source-specific query; the first MLD_MAX_SOURCES are in `sources`. */
  sourceCount: number;
  readonly sources: readonly Uint8Array[];
  // ---- MLDv2 report ----
  recordCount: number;
  recordsDropped: number;
  readonly records: readonly MldRecord[];
}

export function createMldMessage(): MldMessage {
  return {
    type: 0,
    version: 0,
    maxResponseMs: 0,
    group: new Uint8Array(16),
    suppress: false,
    qrv: 0,
    qqiS: 0,
    sourceCount: 0,
    sources: Array.from({ length: MLD_MAX_SOURCES }, () => new Uint8Array(16)),
    recordCount: 0,
    recordsDropped: 0,
    records: Array.from({ length: MLD_MAX_RECORDS }, () => ({
      type: 0,
      sourceCount: 0,
      group: new Uint8Array(16),
    })),
  };
}

export function isMldType(type: number): boolean {
  return type === 130 || type === 131 || type === 132 || type === 143;
}

/** RFC 3810 5.1.3: a maximum response code of 32768 or more is a floating-point value. */
export function mldMaxResponseMs(code: number): number {
  if (code < 0x8000) return code;
  return ((code & 0xfff) | 0x1000) << (((code >>> 12) & 7) + 3);
}

/** RFC 3810 5.1.9: a QQIC of 128 or more is a floating-point value. */
export function mldQqiSeconds(code: number): number {
  if (code < 0x80) return code;
  return ((code & 0x0f) | 0x10) << (((code >>> 4) & 7) + 3);
}

/**
 * Decode the MLD message buf[off, off+len) (the whole ICMPv6 message). Errors: 'truncated',
 * 'bad-length' (a query neither 24 nor 28 + 16 × sources bytes long, a report whose records run
 * past its end), 'bad-type' (not an MLD type).
 */
export function decodeMld(buf: Uint8Array, off: number, len: number, out: MldMessage): DecodeError | null {
  if (off < 0 || len < 8 || off + len > buf.length) return 'truncated';
  const type = buf[off]!;
  out.type = type;
  out.sourceCount = 0;
  out.recordCount = 0;
  out.recordsDropped = 0;
  out.suppress = false;
  out.qrv = 0;
  out.qqiS = 0;
  out.maxResponseMs = 0;
  switch (type) {
    case MldType.QUERY: {
      if (len < MLD_V1_LENGTH) return 'truncated';
      copyIpv6(out.group, 0, buf, off + 8);
      const code = readU16(buf, off + 4);
      if (len === MLD_V1_LENGTH) {
        out.version = 1;
        out.maxResponseMs = code;
        return null;
      }
      // RFC 3810 8.1: a query of any other length below 28 is not a valid query of either version.
      if (len < MLD_V2_QUERY_MIN) return 'bad-length';
      const n = readU16(buf, off + 26);
      if (MLD_V2_QUERY_MIN + 16 * n > len) return 'truncated';
      out.version = 2;
      out.maxResponseMs = mldMaxResponseMs(code);
      out.suppress = (buf[off + 24]! & 0x08) !== 0;
      out.qrv = buf[off + 24]! & 0x07;
      out.qqiS = mldQqiSeconds(buf[off + 25]!);
      out.sourceCount = n;
      for (let i = 0; i < n && i < MLD_MAX_SOURCES; i++) {
        copyIpv6(out.sources[i] as Uint8Array, 0, buf, off + MLD_V2_QUERY_MIN + 16 * i);
      }
      return null;
    }
    case MldType.V1_REPORT:
    case MldType.V1_DONE:
      if (len < MLD_V1_LENGTH) return 'truncated';
      out.version = 1;
      copyIpv6(out.group, 0, buf, off + 8);
      return null;
    case MldType.V2_REPORT: {
      out.version = 2;
      const n = readU16(buf, off + 6);
      let at = off + 8;
      const end = off + len;
      for (let i = 0; i < n; i++) {
        if (at + 20 > end) return 'truncated';
        const sources = readU16(buf, at + 2);
        const next = at + 20 + 16 * sources + 4 * buf[at + 1]!;
        if (next > end) return 'truncated';
        if (i < MLD_MAX_RECORDS) {
          const r = out.records[i] as MldRecord;
          r.type = buf[at]!;
          r.sourceCount = sources;
          copyIpv6(r.group, 0, buf, at + 4);
        } else out.recordsDropped++;
        at = next;
      }
      out.recordCount = Math.min(n, MLD_MAX_RECORDS);
      return null;
    }
    default:
      return 'bad-type';
  }
}

/** Bytes an MLDv2 report of `records` records without sources takes (the ICMPv6 message). */
export function mldReportLength(records: number): number {
  return 8 + 20 * records;
}

const tx = createIcmpv6Header();

/**
 * Write an MLDv2 report at buf[off] (RFC 3810 5.2): one record of `recordType` without sources
 * per group in `groups` (this host never filters sources, so every state it reports is
 * EXCLUDE {} or INCLUDE {}), checksummed over the pseudo-header of src and dst. Returns its length.
 */
export function encodeMldReport(
  recordType: number,
  groups: readonly Uint8Array[],
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  buf[off + 4] = 0;
  buf[off + 5] = 0;
  writeU16(buf, off + 6, groups.length);
  let at = off + 8;
  for (const g of groups) {
    buf[at] = recordType;
    buf[at + 1] = 0;
    writeU16(buf, at + 2, 0);
    copyIpv6(buf, at + 4, g, 0);
    at += 20;
  }
  tx.type = MldType.V2_REPORT;
  tx.code = 0;
  return encodeIcmpv6(tx, buf, off, at - off - 8, src, dst);
}

/** Write an MLDv1 report or done (RFC 2710 3) for `group` at buf[off]; returns 24. */
export function encodeMldV1(
  type: typeof MldType.V1_REPORT | typeof MldType.V1_DONE,
  group: Uint8Array,
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  buf.fill(0, off + 4, off + 8);
  copyIpv6(buf, off + 8, group, 0);
  tx.type = type;
  tx.code = 0;
  return encodeIcmpv6(tx, buf, off, 16, src, dst);
}

export interface MldQueryEncode {
  /** 1: the 24-byte MLDv1 query; 2 (default): MLDv2. */
  version?: number;
  /** Up to 32767 ms, written as is. */
  maxResponseMs: number;
  /** :: for a general query. */
  group: Uint8Array;
  qrv?: number;
  /** Below 128 s, written as is. */
  qqiS?: number;
  sources?: readonly Uint8Array[];
}

/** Write a query (what a querier sends; the tests play one) at buf[off]; returns its length. */
export function encodeMldQuery(
  q: MldQueryEncode,
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  writeU16(buf, off + 4, Math.min(q.maxResponseMs, 0x7fff));
  writeU16(buf, off + 6, 0);
  copyIpv6(buf, off + 8, q.group, 0);
  let len = MLD_V1_LENGTH;
  if ((q.version ?? 2) === 2) {
    const sources = q.sources ?? [];
    buf[off + 24] = (q.qrv ?? 2) & 7;
    buf[off + 25] = Math.min(q.qqiS ?? 125, 0x7f);
    writeU16(buf, off + 26, sources.length);
    sources.forEach((s, i) => {
      copyIpv6(buf, off + MLD_V2_QUERY_MIN + 16 * i, s, 0);
    });
    len = MLD_V2_QUERY_MIN + 16 * sources.length;
  }
  tx.type = MldType.QUERY;
  tx.code = 0;
  return encodeIcmpv6(tx, buf, off, len - 8, src, dst);
}
