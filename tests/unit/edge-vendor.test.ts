import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { edgeVendorDrift, registryPatches, uncopiedImports, unmappedImports, vendoredTree } from '../../scripts/lib/edge-vendor.ts';

// The edge functions run the patched postgres.js and @hono/zod-openapi (supabase/functions/_vendor,
// npm run edge:vendor): a patch changed, or a version bumped, without the copy made again would
// ship the functions the old code. tests/integration/edge-functions-run.test.ts runs them.
const root = fileURLToPath(new URL('../..', import.meta.url));

describe('supabase/functions/_vendor', () => {
  it('is what npm run edge:vendor makes from the patched node_modules, and every import map points at it', () => {
    expect(edgeVendorDrift(root)).toEqual([]);
  });
  it('carries the patches: answer_timeout in postgres.js, the media type alone in @hono/zod-openapi; node built-ins by the node: scheme', () => {
    const { files, imports } = vendoredTree(root);
    const text = (suffix: string) => [...files].find(([path]) => path.endsWith(suffix))![1];
    expect(text('postgres@3.4.9/src/connection.js')).toContain('answer_timeout');
    expect(text('postgres@3.4.9/src/connection.js')).toMatch(/^import net from 'node:net'$/m);
    expect(text('zod-openapi@1.6.3/dist/index.mjs')).toContain('const jsonRequestRegex = /^application\\/([a-z-\\.]+\\+)?json$/i;');
    expect(imports.postgres).toBe('../_vendor/postgres@3.4.9/src/index.js');
  });
  it('names a patch of a package an import map loads from the registry: the function would run it unpatched', () => {
    // a repository of its own: patches/ and two functions' import maps
    const dir = mkdtempSync(join(tmpdir(), 'edge-vendor-'));
    try {
      mkdirSync(join(dir, 'patches'));
      for (const file of ['hono+4.13.19.patch', '@hono+zod-openapi+1.6.3.patch', 'kysely-postgres-js++zod+4.6.7.patch',
        'graphile-worker+0.17.3.patch', '@opentelemetry+api+1.10.0.patch']) writeFileSync(join(dir, 'patches', file), '');
      const map = (imports: Record<string, string>) => `${JSON.stringify({ imports })}\n`;
      for (const [name, imports] of Object.entries<Record<string, string>>({
        canvas: { hono: 'npm:hono@4.13.19', 'hono/': 'npm:/hono@4.13.19/', '@hono/zod-openapi': '../_vendor/@hono/zod-openapi@1.6.3/dist/index.mjs',
          zod: 'npm:zod@4.6.7', '@opentelemetry/api/': 'npm:/@opentelemetry/api@1.10.0/' },
        auth: { '@hono/zod-openapi': '../_vendor/@hono/zod-openapi@1.6.3/dist/index.mjs', 'honorific': 'npm:honorific@1.0.0' },
        _vendor: { hono: 'npm:hono@4.13.19' },
      })) {
        mkdirSync(join(dir, 'supabase/functions', name), { recursive: true });
        writeFileSync(join(dir, 'supabase/functions', name, 'deno.json'), map(imports));
      }
      const fix = 'add it to VENDORED (scripts/lib/edge-vendor.ts)';
      expect(registryPatches(dir)).toEqual([
        `patches/@opentelemetry+api+1.10.0.patch: supabase/functions/canvas/deno.json loads @opentelemetry/api from the registry, unpatched: ${fix}`,
        `patches/hono+4.13.19.patch: supabase/functions/canvas/deno.json loads hono from the registry, unpatched: ${fix}`,
        `patches/kysely-postgres-js++zod+4.6.7.patch: supabase/functions/canvas/deno.json loads zod from the registry, unpatched: ${fix}`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // this repository's patches: the functions load none of the packages unpatched
    expect(registryPatches(root)).toEqual([]);
  });
  it('names a bare import of a vendored file that no import map entry resolves (Deno refuses it as the function loads)', () => {
    const imports = { hono: 'npm:hono@4.13.19', 'hono/': 'npm:/hono@4.13.19/', 'openapi3-ts/': 'npm:/openapi3-ts@4.6.2/' };
    const text = [`import { Hono } from "hono";`, `import { x } from 'hono/utils/url';`, `import y from './y.js';`, `import net from 'node:net';`,
      `import { oas31 } from "openapi3-ts/oas31";`, `export * from '@asteasolutions/zod-to-openapi';`, `const z = await import('zod');`,
      `import 'side-effect';`, `import t from "openapi3-ts";`].join('\n');
    expect(unmappedImports(text, imports)).toEqual(['@asteasolutions/zod-to-openapi', 'openapi3-ts', 'side-effect', 'zod']);
    // this repository's copies: edgeVendorDrift (above) reports a bare import any function's map does not resolve
  });
  it('names a relative import of a vendored file that the copy does not hold (a build split into chunks)', () => {
    const files = new Set(['v/pkg@1/dist/index.mjs', 'v/pkg@1/dist/chunk-a.mjs', 'v/pkg@1/src/util.js']);
    const text = [`import { a } from './chunk-a.mjs';`, `import { b } from "./chunk-b.mjs";`, `export * from '../src/util.js';`,
      `const c = await import('../src/lazy.js');`, `import hono from 'hono';`].join('\n');
    expect(uncopiedImports('v/pkg@1/dist/index.mjs', text, files)).toEqual(['../src/lazy.js', './chunk-b.mjs']);
  });
});
