import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/**
 * The re-runnable sources in `sql/` and what the generated migrations already hold of them.
 *
 * `npm run db:migration -- <name>` (scripts/db-migration.ts) copies the changed sources into a new
 * migration whose header lists every source with its sha256 (`-- potentia:source <path> <sha256>`)
 * and the Graphile Worker schema revision it installs (`-- potentia:graphile-worker <version> <n>`).
 * The newest migration carrying such a header is the manifest: `sourcesDrift` compares `sql/`
 * (and the installed graphile-worker) against it.
 */
export type SourceFile = { path: string; text: string; sha256: string };
export type Manifest = {
  migration: string; // supabase/migrations/<version>_<name>.sql
  sources: Map<string, string>; // path -> sha256
  graphileWorker: { version: string; revision: number } | null;
};
export type Drift = {
  manifest: string | null; // the migration compared against; null: none generated yet
  changed: string[];
  added: string[];
  removed: string[];
  graphileWorker: { have: number; need: number } | null; // set when the installed library is ahead
};

export const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

const SOURCE_LINE = /^-- potentia:source (\S+) ([0-9a-f]{64})\b/gm;
const WORKER_LINE = /^-- potentia:graphile-worker (\S+) (\d+)\b/m;

export async function listSql(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.sql'))
    .map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))
    .sort();
}

/** The sources of `sql/` except the compat schemas, in the order they are applied (path order:
 *  sql/security/ last, as it acts on every function the others made). */
export async function sourceFiles(root: string): Promise<SourceFile[]> {
  const files = (await listSql(join(root, 'sql'))).filter((f) => !relative(root, f).startsWith('sql/compat/'));
  return Promise.all(
    files.map(async (f) => {
      const text = await readFile(f, 'utf8');
      return { path: relative(root, f), text, sha256: sha256(text) };
    }),
  );
}

/** The newest generated migration's manifest, or null before the first one. */
export async function readManifest(root: string): Promise<Manifest | null> {
  const migrations = (await listSql(join(root, 'supabase/migrations'))).reverse();
  for (const file of migrations) {
    // the header only: the sources it carries below could contain anything
    const text = (await readFile(file, 'utf8')).split(/\n\s*\n/, 1)[0]!;
    const sources = new Map([...text.matchAll(SOURCE_LINE)].map((m) => [m[1]!, m[2]!] as const));
    if (sources.size === 0) continue;
    const worker = WORKER_LINE.exec(text);
    return {
      migration: relative(root, file),
      sources,
      graphileWorker: worker ? { version: worker[1]!, revision: Number(worker[2]) } : null,
    };
  }
  return null;
}

/** What `sql/` and graphile-worker have that the generated migrations do not. */
export async function sourcesDrift(root: string, workerRevision: number): Promise<Drift> {
  const [files, manifest] = await Promise.all([sourceFiles(root), readManifest(root)]);
  const known = manifest?.sources ?? new Map<string, string>();
  const have = manifest?.graphileWorker?.revision ?? 0;
  return {
    manifest: manifest?.migration ?? null,
    changed: files.filter((f) => known.has(f.path) && known.get(f.path) !== f.sha256).map((f) => f.path),
    added: files.filter((f) => !known.has(f.path)).map((f) => f.path),
    removed: [...known.keys()].filter((p) => !files.some((f) => f.path === p)),
    graphileWorker: workerRevision > have ? { have, need: workerRevision } : null,
  };
}

export const hasDrift = (d: Drift) =>
  d.changed.length + d.added.length + d.removed.length > 0 || d.graphileWorker !== null;

/** One line per difference, for messages. */
export function describeDrift(d: Drift): string[] {
  const since = d.manifest ? `since ${d.manifest}` : '(no generated migration yet)';
  return [
    ...d.changed.map((p) => `${p} changed ${since}`),
    ...d.added.map((p) => `${p} is new ${since}`),
    ...d.removed.map((p) => `${p} was removed ${since} (its objects stay in databases unless a source drops them)`),
    ...(d.graphileWorker
      ? [`graphile-worker's schema is at revision ${d.graphileWorker.need}, supabase/migrations install revision ${d.graphileWorker.have}`]
      : []),
  ];
}
