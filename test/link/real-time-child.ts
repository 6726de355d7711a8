/**
 * Run as a child by switch.test.ts: a switch on RealClock with a delayed port carries 20 frames,
 * and nothing is closed afterwards. The process must then exit by itself: if a timer of the switch
 * kept the event loop alive, the parent sees no exit.
 */
import { RealClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import { frame, hostMac, idOf } from './helpers.ts';

const sw = new MemorySwitch({ clock: new RealClock(), random: new SeededRandom(3) });
const a = sw.addPort({ impair: { tx: { delayMs: 5 } } });
const b = sw.addPort();
const got: number[] = [];
b.onFrame((f) => {
  got.push(idOf(f));
  if (got.length === 20) process.stdout.write(`${got.join(',')}\n`);
});
for (let i = 0; i < 20; i++) a.send(frame(hostMac(1), hostMac(0), i));

process.on('exit', () => process.stdout.write(`exit in-flight=${sw.framesInFlight}\n`));
