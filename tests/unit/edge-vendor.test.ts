import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { edgeVendorDrift, vendoredTree } from '../../scripts/lib/edge-vendor.ts';

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
});
