// npm run edge:vendor [-- --check]
// Copies the npm packages the edge functions import that patches/ changes (postgres,
// @hono/zod-openapi) from node_modules, patched, into supabase/functions/_vendor/, and points the
// functions' deno.json import maps at the copies (scripts/lib/edge-vendor.ts says why). With
// --check it only compares, and fails when the committed copies or import maps differ.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from './lib/command-line.ts';
import { edgeFunctionDirs, edgeVendorDrift, VENDOR_DIR, vendoredTree, withVendoredImports } from './lib/edge-vendor.ts';

const { values } = parseCommandLine({ options: { check: { type: 'boolean' } } });
const root = fileURLToPath(new URL('..', import.meta.url));
if (values.check) {
  const drift = edgeVendorDrift(root);
  if (drift.length) {
    console.error(`the edge functions' vendored packages are out of date with node_modules and patches/: run \`npm run edge:vendor\` and commit the result:\n  ${drift.join('\n  ')}`);
    process.exit(1);
  }
  console.log('edge:vendor: up to date');
} else {
  const { files, imports } = vendoredTree(root);
  rmSync(join(root, VENDOR_DIR), { recursive: true, force: true });
  for (const [path, text] of files) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  const names = edgeFunctionDirs(root);
  for (const name of names) {
    const path = join(root, 'supabase/functions', name, 'deno.json');
    writeFileSync(path, withVendoredImports(readFileSync(path, 'utf8'), imports));
  }
  console.log(`edge:vendor: ${files.size} files in ${VENDOR_DIR}, ${names.length} import maps`);
}
