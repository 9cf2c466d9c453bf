import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildTree, changedFields, keyBetween, mergePatch, type Block } from '../../packages/client/src/blocks.ts';
import { jsonbTextBytes } from '../../packages/client/src/presence.ts';

// The package as a package: its declared API (what `tsc` emits for consumers) has no `any` and
// every export is documented; it builds for plain Node (ESM, no TypeScript loader) and bundles
// for browsers with esbuild; and the pure helpers under the optimistic state behave.

const run = promisify(execFile);
const root = resolve(fileURLToPath(import.meta.url), '../../..');
const pkg = join(root, 'packages/client');
const tsc = join(root, 'node_modules/.bin/tsc');

/** Source text without comments (string contents are kept: none of ours holds comment markers). */
const code = (text: string) => text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');

describe('@potentia/client, the package', () => {
  it('declares no `any` in what it exports (tsc declaration output)', async () => {
    const out = mkdtempSync(join(tmpdir(), 'potentia-client-dts-'));
    try {
      await run(tsc, ['-p', join(pkg, 'tsconfig.json'), '--emitDeclarationOnly', '--declarationMap', 'false', '--outDir', out]);
      const files = readdirSync(out).filter((f) => f.endsWith('.d.ts'));
      expect(files).toContain('index.d.ts');
      const offending = files.flatMap((f) => code(readFileSync(join(out, f), 'utf8')).split('\n')
        .filter((line) => /\bany\b/.test(line)).map((line) => `${f}: ${line.trim()}`));
      expect(offending).toEqual([]);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it('documents every exported declaration of its sources', () => {
    const undocumented: string[] = [];
    for (const f of readdirSync(join(pkg, 'src')).filter((n) => n.endsWith('.ts'))) {
      const lines = readFileSync(join(pkg, 'src', f), 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (!/^export (declare )?(async )?(function|class|type|const|interface|enum) /.test(line)) return;
        if (/^export type \{/.test(line)) return; // a re-export: documented where declared
        if (f === 'api-types.ts') return; // generated from the OpenAPI document: documented at its zod schemas
        if (!/\*\/\s*$/.test(lines[i - 1] ?? '')) undocumented.push(`${f}:${i + 1}: ${line.slice(0, 80)}`);
      });
      expect(code(lines.join('\n'))).not.toMatch(/:\s*any\b|<any>|as any\b/); // nor inside, in the sources
    }
    expect(undocumented).toEqual([]);
  });

  it('builds for plain Node (its build: tsc -p packages/client), then imports without a TypeScript loader', async () => {
    const out = mkdtempSync(join(pkg, '.build-test-')); // inside the package, so node_modules resolve as for dist/
    try {
      await run(tsc, ['-p', join(pkg, 'tsconfig.json'), '--outDir', out]);
      const script = `const c = await import(${JSON.stringify(join(out, 'index.js'))});
        const p = c.createPotentiaClient({ url: 'http://127.0.0.1:1', anonKey: 'k', WebSocket: class {} });
        console.log(JSON.stringify({ exports: Object.keys(c).sort(), canvas: p.canvas('x').status, error: new c.ConflictError('conflict', 'm', 'b', null, 1, [], {}) instanceof c.PotentiaError }));`;
      const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: pkg });
      const result = JSON.parse(stdout);
      expect(result.exports).toEqual(expect.arrayContaining([
        'AccessLostError', 'Canvas', 'CanvasSync', 'ConflictError', 'PotentiaError', 'RateLimitedError', 'TextOtClient', 'createPotentiaClient',
      ]));
      expect(result).toMatchObject({ canvas: 'idle', error: true });
      // package.json's exports name files the build makes
      const manifest = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8'));
      expect(manifest).toMatchObject({ name: '@potentia/client', type: 'module' });
      for (const target of [manifest.exports['.'].default, manifest.exports['.'].types]) {
        expect(readdirSync(out)).toContain(target.replace('./dist/', ''));
      }
      expect(manifest.exports['.'].source).toBe('./src/index.ts');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it('bundles for browsers with esbuild: no Node built-ins', async () => {
    const result = await build({
      entryPoints: [join(pkg, 'src/index.ts')], bundle: true, format: 'esm', platform: 'browser', write: false, metafile: true, logLevel: 'silent',
    });
    expect(result.errors).toEqual([]);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.filter((i) => i.startsWith('node:') || /^(fs|net|tls|http|crypto)$/.test(i))).toEqual([]);
    expect(inputs.some((i) => i.endsWith('packages/client/src/canvas.ts'))).toBe(true);
    expect(inputs.some((i) => i.includes('src/realtime') || i.includes('src/http'))).toBe(false); // nothing of the server
  });
});

describe('the optimistic state helpers', () => {
  const digits = fc.constantFrom(...'0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz');
  // LexoRank keys as the server makes them: base-62 digits, not ending in 0
  const key = fc.array(digits, { minLength: 1, maxLength: 10 }).map((d) => d.join('')).filter((k) => !k.endsWith('0'));

  it('keyBetween gives a key strictly between its bounds, in byte order', () => {
    fc.assert(fc.property(key, key, (a, b) => {
      if (a === b) return;
      const [lo, hi] = a < b ? [a, b] : [b, a];
      const k = keyBetween(lo, hi);
      expect(lo < k && k < hi).toBe(true);
      expect(keyBetween(null, lo) < lo).toBe(true);
      expect(keyBetween(hi, null) > hi).toBe(true);
    }), { seed: 20261130, numRuns: 2000 });
  });

  it('mergePatch is RFC 7396', () => {
    expect(mergePatch({ a: 1, b: { c: 1, d: 2 }, e: [1] }, { a: null, b: { c: null, x: 3 }, e: [2], f: 'g' })).toEqual({ b: { d: 2, x: 3 }, e: [2], f: 'g' });
    expect(mergePatch({ a: 1 }, 'x')).toBe('x');
    expect(mergePatch('x', { a: { b: null } })).toEqual({ a: {} });
  });

  it('mergePatch keeps a __proto__ key as an ordinary member, as the server (jsonb) does', () => {
    // a patch read from JSON holds __proto__ as an own key; assigning it would set the prototype
    const merged = mergePatch({}, JSON.parse('{"__proto__": {"polluted": 1}, "a": 1}')) as Record<string, unknown>;
    expect(JSON.stringify(merged)).toBe('{"__proto__":{"polluted":1},"a":1}');
    expect(Object.getPrototypeOf(merged)).toBe(Object.prototype);
    expect(merged['polluted']).toBeUndefined();
    const nested = mergePatch({ b: {} }, JSON.parse('{"b": {"__proto__": {"x": 1}}}')) as { b: object };
    expect(JSON.stringify(nested)).toBe('{"b":{"__proto__":{"x":1}}}');
    expect(Object.getPrototypeOf(nested.b)).toBe(Object.prototype);
    // merged into, then removed, as any key
    const target = JSON.parse('{"__proto__": {"x": 1}}') as Record<string, unknown>;
    expect(JSON.stringify(mergePatch(target, JSON.parse('{"__proto__": {"y": 2}}')))).toBe('{"__proto__":{"x":1,"y":2}}');
    expect(JSON.stringify(mergePatch(target, JSON.parse('{"__proto__": null}')))).toBe('{}');
  });

  const block = (id: string, parent: string | null, y: string, content: Record<string, unknown> = {}): Block => ({
    block_id: id, canvas_id: 'c', parent_id: parent, type: 'text', content, y_order: y, version: 1,
    created_at: null, created_by: null, updated_at: null, updated_by: null,
  });

  it('buildTree orders roots and children by y_order, keeps orphans at the top and survives a cycle', () => {
    const tree = buildTree([block('b', null, 'V'), block('a', null, 'B'), block('c2', 'a', 'z'), block('c1', 'a', 'C'), block('o', 'gone', 'M'),
      block('x', 'y', 'q'), block('y', 'x', 'r')]);
    expect(tree.map((n) => n.block_id)).toEqual(['a', 'o', 'b', 'y']); // the x ↔ y cycle is cut once
    expect(tree[0]!.children.map((n) => n.block_id)).toEqual(['c1', 'c2']);
    expect(tree[3]!.children.map((n) => n.block_id)).toEqual(['x']);
  });

  it('changedFields names the merge fields two versions differ in', () => {
    const a = block('a', null, 'V', { t: 'x', n: { deep: 1 } });
    expect([...(changedFields(a, { ...a, content: { t: 'x', n: { deep: 2 }, new: 1 }, y_order: 'W' }) as Set<string>)].sort())
      .toEqual(['content.n', 'content.new', 'position']);
    expect(changedFields(a, undefined)).toBe('all');
    expect(changedFields(a, { ...a, parent_id: 'p', type: 'h1' })).toEqual(new Set(['parent', 'type']));
  });

  it('jsonbTextBytes counts as Postgres prints jsonb', () => {
    // select octet_length('{"name": "Zoë", "cursor": {"x": 1, "y": 2.5}, "typing": false, "list": [1, null]}'::jsonb::text) = 82
    expect(jsonbTextBytes({ name: 'Zoë', cursor: { x: 1, y: 2.5 }, typing: false, list: [1, null] })).toBe(82);
  });
});
