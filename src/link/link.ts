/**
 * The link contract lives in core (src/core/link.ts) so that the stack, which consumes it, and
 * this folder, which implements it, both see it without the stack importing a device layer.
 */
export type { Link, LinkGsoOptions, LinkOffloads, RxOffloadInfo } from '../core/link.ts';
