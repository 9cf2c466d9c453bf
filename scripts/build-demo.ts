// npm run build:demo: bundles the demo app (demo/src, vanilla TypeScript + CSS, with
// @potentia/client from packages/client) into demo/dist/, which `npm start` serves at /.
//   npx tsx scripts/build-demo.ts [--if-changed] [--quiet]
//     --if-changed   do nothing when demo/dist was built from the same sources (see below)
//
// Output: demo/dist/index.html (from demo/index.html, naming the bundles) and
// demo/dist/assets/app-<hash>.{js,css} (+ source maps): content-hashed names, so the server can
// cache them forever while index.html is always revalidated.
// Up-to-date check: demo/dist/.build-inputs lists every file the bundle was made of (esbuild's
// metafile, node_modules stood for by package-lock.json) plus this script, and .build-hash is the
// sha256 of those files' contents concatenated in that order. scripts/setup recomputes the same
// hash in bash (no Node start-up), so `npm start` and `npm test` rebuild only when a source changed.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { parseCommandLine } from './lib/command-line.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'demo/dist');
const INPUTS_FILE = join(DIST, '.build-inputs');
const HASH_FILE = join(DIST, '.build-hash');

/** sha256 of the files' contents in order (a missing file counts as empty, so it changes the hash). */
function hashOf(files: string[]): string {
  const h = createHash('sha256');
  for (const f of files) {
    const path = join(ROOT, f);
    if (existsSync(path)) h.update(readFileSync(path));
  }
  return h.digest('hex');
}

/** True when demo/dist was built from exactly the current sources. */
export function demoIsCurrent(): boolean {
  if (!existsSync(INPUTS_FILE) || !existsSync(HASH_FILE) || !existsSync(join(DIST, 'index.html'))) return false;
  const files = readFileSync(INPUTS_FILE, 'utf8').split('\n').filter(Boolean);
  return readFileSync(HASH_FILE, 'utf8').trim() === hashOf(files);
}

/** Builds demo/dist; with ifChanged, only when demoIsCurrent() is false. Returns whether it built. */
export async function buildDemo(opts: { ifChanged?: boolean } = {}): Promise<boolean> {
  if (opts.ifChanged && demoIsCurrent()) return false;
  rmSync(DIST, { recursive: true, force: true });
  mkdirSync(join(DIST, 'assets'), { recursive: true });
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: { app: 'demo/src/main.ts', style: 'demo/src/style.css' },
    outdir: join(DIST, 'assets'),
    entryNames: '[name]-[hash]',
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
  });
  const outputs = Object.keys(result.metafile.outputs).map((o) => relative(join(DIST, 'assets'), join(ROOT, o)));
  const js = outputs.find((o) => /^app-.*\.js$/.test(o));
  const css = outputs.find((o) => /^style-.*\.css$/.test(o));
  if (!js || !css) throw new Error(`esbuild produced no app bundle or stylesheet: ${outputs.join(', ')}`);
  const template = readFileSync(join(ROOT, 'demo/index.html'), 'utf8');
  writeFileSync(join(DIST, 'index.html'), template.replaceAll('%APP_JS%', `/assets/${js}`).replaceAll('%APP_CSS%', `/assets/${css}`));

  const inputs = Object.keys(result.metafile.inputs).filter((f) => !f.includes('node_modules/')).sort();
  const files = [...inputs, 'demo/index.html', 'scripts/build-demo.ts', 'package-lock.json'];
  writeFileSync(INPUTS_FILE, `${files.join('\n')}\n`);
  writeFileSync(HASH_FILE, `${hashOf(files)}\n`);
  return true;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseCommandLine({ options: { 'if-changed': { type: 'boolean' }, quiet: { type: 'boolean' } } });
  const started = Date.now();
  try {
    const built = await buildDemo({ ifChanged: values['if-changed'] });
    if (!values.quiet) console.log(built ? `demo built into demo/dist in ${Date.now() - started} ms` : 'demo/dist is up to date');
  } catch (err) {
    console.error(`building the demo failed: ${(err as Error).message}`);
    process.exit(1);
  }
}
