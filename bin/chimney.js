#!/usr/bin/env node
// Chimney ships as TypeScript; tsx compiles it on load so the CLI runs without a build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
