#!/usr/bin/env node
/**
 * Fails (exit 1) when the viewer's modules import each other in a cycle, naming it.
 * A cycle makes the order in which modules run depend on which is imported first, and the
 * viewer's split (src/viewer/: page, panel, tools, keyboard, layout, cine, prefetch, series,
 * protocol) keeps each concern importable on its own, the review client (src/review.js)
 * included. `npm run build` runs it before Vite.
 *
 * Usage: node scripts/check-imports.mjs [directory]   (default: src)
 * Only relative imports are followed (packages cannot import the viewer back): static
 * `import ... from './x.js'`, `import './x.js'`, `export ... from './x.js'` and `import('./x.js')`.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(process.argv[2] || join(here, '..', 'src'));

function modules(directory) {
  return readdirSync(directory).flatMap((name) => {
    const path = join(directory, name);
    if (statSync(path).isDirectory()) return modules(path);
    return /\.(m?js)$/.test(name) ? [path] : [];
  });
}

const SPECIFIERS = [
  /\bimport\s[^'"]*?\bfrom\s*['"]([^'"]+)['"]/g,
  /\bexport\s[^'"]*?\bfrom\s*['"]([^'"]+)['"]/g,
  /\bimport\s*['"]([^'"]+)['"]/g,
  /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
];

function importsOf(path) {
  // Comments may quote an import (a module's header does): leave them out.
  const source = readFileSync(path, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found = new Set();
  for (const pattern of SPECIFIERS) {
    for (const match of source.matchAll(pattern)) {
      const specifier = match[1];
      if (specifier.startsWith('.') && /\.(m?js)$/.test(specifier)) found.add(resolve(dirname(path), specifier));
    }
  }
  return [...found];
}

const graph = new Map(modules(root).map((path) => [path, importsOf(path)]));
const name = (path) => relative(root, path);

const missing = [...graph].flatMap(([path, targets]) =>
  targets.filter((target) => !graph.has(target)).map((target) => `${name(path)} imports ${name(target)}, which does not exist`));

// Depth-first search; a module met again while still on the path closes a cycle.
const DONE = 2;
const ON_PATH = 1;
const state = new Map();
const cycles = [];
function visit(path, trail) {
  state.set(path, ON_PATH);
  trail.push(path);
  for (const target of graph.get(path) || []) {
    if (!graph.has(target)) continue;
    if (state.get(target) === ON_PATH) cycles.push([...trail.slice(trail.indexOf(target)), target].map(name).join(' -> '));
    else if (!state.has(target)) visit(target, trail);
  }
  trail.pop();
  state.set(path, DONE);
}
for (const path of [...graph.keys()].sort()) if (!state.has(path)) visit(path, []);

for (const line of missing) console.error(`check-imports: ${line}`);
for (const cycle of cycles) console.error(`check-imports: import cycle: ${cycle}`);
if (missing.length || cycles.length) process.exit(1);
console.log(`check-imports: ${graph.size} modules under ${relative(process.cwd(), root) || '.'}, no import cycle`);
