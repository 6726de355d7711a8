// A thread of its own for layout-records.test.ts: loads the clock, then asks whether a Timeout
// made with a whole delay and one made with a fraction share a layout (V8 flags are the process's).
import { parentPort } from 'node:worker_threads';
import '../../src/core/clock.ts';

const sameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
const made = (ms: number): NodeJS.Timeout => {
  const t = setTimeout(() => {}, ms);
  clearTimeout(t);
  return t;
};
const whole = made(5);
parentPort!.postMessage(sameMap(whole, made(2.25)));
