/**
 * Diagnostics: every stretch of at least `minMs` in which this thread's event loop ran something
 * else than a 5 ms ticker (the ticker came late), reported in epoch ms so that the records of
 * several threads and of a client line up. `onTick` runs after every tick, blocked or not. The
 * ticker does not keep the thread alive.
 */
export function watchLoopBlocks(
  onBlock: (fromEpochMs: number, toEpochMs: number) => void,
  onTick?: () => void,
  minMs = 20,
): void {
  const TICK = 5;
  let last = performance.now();
  const epoch = Date.now() - last;
  setInterval(() => {
    const now = performance.now();
    if (now - last >= minMs + TICK) onBlock(epoch + last, epoch + now);
    onTick?.();
    last = now;
  }, TICK).unref();
}
