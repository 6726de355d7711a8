/**
 * Why a decoder refused its input. Decoders return `null` on success or one of these; they never
 * throw and never allocate, so a hostile frame costs a comparison, not a stack trace.
 */
export type DecodeError =
  | 'truncated'
  | 'bad-checksum'
  | 'bad-version'
  | 'bad-header-length'
  | 'bad-length'
  | 'bad-option'
  | 'bad-type'
  | 'unsupported';
