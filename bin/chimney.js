#!/usr/bin/env node
// The installed package runs its compiled JavaScript (dist/). A source checkout with its development
// dependencies runs the TypeScript sources through tsx instead, so the command never runs a stale build.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
const tsx =
  source.protocol === 'file:' && existsSync(source) ? await import('tsx/esm/api').catch(() => null) : null;
if (tsx) {
  tsx.register();
  await import(source.href);
} else {
  await import('../dist/cli/main.js');
}
