/**
 * The layer rule, checked: every import of every file under src/ must be allowed by the table in
 * docs/architecture.md ("Layers and the import rule"). The table is read from the document itself,
 * so the rule as written and the rule as enforced cannot drift apart. Import cycles are Biome's job
 * (`noImportCycles` in biome.json); this script only knows folders.
 *
 *   tsx scripts/check-layers.ts [--root DIR]     (run by `npm run lint`; exit 1 on any violation)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Layer name → the layers it may import besides itself. */
export type LayerRule = Map<string, Set<string>>;

export interface Violation {
  /** Path of the importing file, relative to the root, with forward slashes. */
  file: string;
  line: number;
  specifier: string;
  message: string;
}

/** The package index (src/index.ts) is a layer of its own in the table. */
export const INDEX_LAYER = 'index';

const SOURCE = /(?:\bfrom\s*|^import\s*)['"]([^'"]+)['"]/;
const LIST_OPEN = /^(import|export)(\s+type)?(\s+\w+\s*,)?\s*\{\s*$/;

const RULE_HEADING = '## Layers and the import rule';

/**
 * Reads the allowed-imports table under RULE_HEADING: rows `| \`layer\` | \`a\`, \`b\` ... |`.
 * Names in the second column outside backticks (prose) are ignored; a row with none allows nothing.
 */
export function readRule(markdown: string): LayerRule {
  const start = markdown.indexOf(RULE_HEADING);
  if (start < 0) throw new Error(`docs/architecture.md has no "${RULE_HEADING}" section`);
  const next = markdown.indexOf('\n## ', start + RULE_HEADING.length);
  const section = markdown.slice(start, next < 0 ? undefined : next);
  const rule: LayerRule = new Map();
  let inTable = false;
  for (const line of section.split('\n')) {
    if (/^\|\s*layer\s*\|\s*may import/i.test(line)) {
      inTable = true;
      continue;
    }
    if (!inTable) continue;
    if (!line.startsWith('|')) break;
    const cells = line.split('|').slice(1, -1);
    if (cells.length < 2 || /^\s*-+\s*$/.test(cells[0])) continue;
    const layer = /`([^`]+)`/.exec(cells[0])?.[1];
    if (layer === undefined) continue;
    const allowed = new Set([...cells[1].matchAll(/`([^`]+)`/g)].map((m) => m[1]));
    rule.set(layer, allowed);
  }
  if (rule.size === 0) throw new Error(`no "| layer | may import |" table under "${RULE_HEADING}"`);
  return rule;
}

/**
 * The module specifiers a TypeScript source imports, with their line numbers: static imports and
 * re-exports (type-only ones too: a type is a dependency on the layer that defines it), dynamic
 * `import('...')` with a literal, and worker entries given as `new URL('...', import.meta.url)`.
 * Import declarations are top-level statements, so they are found at the start of a line.
 */
export function parseImports(source: string): { specifier: string; line: number }[] {
  const out: { specifier: string; line: number }[] = [];
  const lines = source.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i];
    if (/^(import|export)\b/.test(text)) {
      let m = SOURCE.exec(text);
      // A named list may span lines ("import {\n  a,\n} from '...'"): the source is on its closing line.
      if (m === null && LIST_OPEN.test(text)) {
        let j = i + 1;
        while (j < lines.length && !lines[j].startsWith('}')) j++;
        if (j < lines.length) m = SOURCE.exec(lines[j]);
      }
      if (m !== null) out.push({ specifier: m[1], line: i + 1 });
    }
    for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g))
      out.push({ specifier: m[1], line: i + 1 });
    for (const m of text.matchAll(/\bnew URL\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*,\s*import\.meta\.url/g)) {
      out.push({ specifier: m[1], line: i + 1 });
    }
  }
  return out;
}

/** The layer of a path relative to the root: `src/<layer>/...`, or INDEX_LAYER for src/index.ts. */
export function layerOf(file: string): string | null {
  const parts = file.split('/');
  if (parts[0] !== 'src') return null;
  if (parts.length === 2) return parts[1] === 'index.ts' ? INDEX_LAYER : null;
  return parts[1];
}

/**
 * Checks every file (path relative to the root → source) against the rule. Relative imports are
 * resolved to the layer they land in; an import that leaves src/ is checked as the layer named by
 * its first folder (so `cli` may be allowed `bench`). Package and `node:` imports are not layers.
 */
export function checkLayers(files: Map<string, string>, rule: LayerRule): Violation[] {
  const out: Violation[] = [];
  const seen = new Set<string>();
  for (const [file, source] of files) {
    const from = layerOf(file);
    if (from === null) continue;
    const allowed = rule.get(from);
    if (allowed === undefined) {
      if (!seen.has(from)) {
        seen.add(from);
        out.push({
          file,
          line: 1,
          specifier: '',
          message: `layer '${from}' is not in the table of docs/architecture.md: add a row for it`,
        });
      }
      continue;
    }
    for (const { specifier, line } of parseImports(source)) {
      if (!specifier.startsWith('.')) continue;
      const target = posix.normalize(posix.join(posix.dirname(file), specifier));
      const to = target.startsWith('src/') ? layerOf(target) : target.split('/')[0];
      if (to === null || to === from || allowed.has(to)) continue;
      out.push({
        file,
        line,
        specifier,
        message: `'${from}' may not import '${to}' (docs/architecture.md, "Layers and the import rule")`,
      });
    }
  }
  return out;
}

/** Every .ts file under dir, as paths relative to root with forward slashes. */
function walk(root: string, dir: string, out: Map<string, string>): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(root, p, out);
    else if (e.name.endsWith('.ts')) out.set(relative(root, p).split(sep).join('/'), readFileSync(p, 'utf8'));
  }
}

/** Checks the tree at root (its src/ against its docs/architecture.md). */
export function checkTree(root: string): Violation[] {
  const rule = readRule(readFileSync(join(root, 'docs', 'architecture.md'), 'utf8'));
  const files = new Map<string, string>();
  walk(root, join(root, 'src'), files);
  return checkLayers(files, rule);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--root');
  const root = i > 0 ? resolve(process.argv[i + 1]) : resolve(dirname(fileURLToPath(import.meta.url)), '..');
  let violations: Violation[];
  try {
    violations = checkTree(root);
  } catch (e) {
    console.error(`check-layers: ${(e as Error).message}`);
    process.exit(1);
  }
  for (const v of violations)
    console.error(`${v.file}:${v.line}: ${v.specifier ? `'${v.specifier}': ` : ''}${v.message}`);
  if (violations.length > 0) {
    console.error(`check-layers: ${violations.length} import(s) against the layer rule`);
    process.exit(1);
  }
  console.log('check-layers: every import follows the layer rule');
}
