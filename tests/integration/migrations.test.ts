import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { runMigrations } from 'graphile-worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { catalog, type CatalogEntry, describeDifferences, diffCatalogs } from '../../src/db/catalog.ts';
import { generateMigration } from '../../src/db/generate-migration.ts';
import { graphileWorkerRevision } from '../../src/db/graphile-schema.ts';
import { pushLikeSupabase } from '../../src/db/push.ts';
import { describeDrift, sourceFiles, sourcesDrift } from '../../src/db/sources.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';

// supabase/migrations are self-contained: a database made from them alone (as `supabase db push`
// makes one) holds the same logic as one with the current sql/ sources applied. When sql/ changes
// without `npm run db:migration -- <name>`, these tests fail and name what differs.
const repoRoot = new URL('../..', import.meta.url).pathname;
const urlOf = (db: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${db}`; return u.toString(); };
const prefix = `potentia_selfcontained_${process.pid}`;
const db = {
  migrations: `${prefix}_push`, // sql/compat + supabase/migrations + seed, nothing else
  sources: `${prefix}_sql`, //      the same, then every sql/ source applied on top
  edited: `${prefix}_edit`, //      the same, then sql/ with one function edited
  generated: `${prefix}_gen`, //    the same, then the migration generated for that edit
  worker: `${prefix}_gw`, //        graphile-worker's own installer on an empty database
};
const labels = { left: 'supabase/migrations', right: 'sql/' };
/** Potentia's own objects on graphile-worker's tables, which its installer does not make: the index
 *  on the locked jobs by worker (supabase/migrations/20261203131600_jobs_locked_by_index.sql). */
const OWN_GRAPHILE_ADDITIONS = /^(index )?graphile_worker\.jobs_locked_by_idx$/;
/** An entry without the grants sql/security/app_role.sql adds to potentia_app (the processes'
 *  least-privilege role), in any ACL it shows (a table's `acl …`, a schema's list after its owner):
 *  one left with the owner's own privileges only is the default, as the installer leaves it. */
const ACL_LIST = /^[^=,\s]+=[^,\s]*\/[^,\s]+(,[^=,\s]+=[^,\s]*\/[^,\s]+)*$/;
const withoutAppRoleGrants = (e: CatalogEntry): CatalogEntry => ({
  ...e,
  def: e.def.split(' ').map((token) => {
    if (!ACL_LIST.test(token)) return token;
    const rest = token.split(',').filter((a) => !a.startsWith('potentia_app='));
    return rest.length === 1 && /^([^=]+)=[^/]*\/\1$/.test(rest[0]!) ? '' : rest.join(',');
  }).join(' '),
});

/** A copy of sql/ and supabase/migrations with the body of the first function of sql/ edited
 *  (a comment added), as a developer would edit a function and forget the migration. */
function editedCopy(sources: string[]): { root: string; file: string; fn: string } {
  const root = checkoutCopy('drift');
  for (const file of sources) {
    const text = readFileSync(join(root, file), 'utf8');
    const m = /create or replace function ([\w.]+)\s*\(/i.exec(text);
    if (!m) continue;
    const body = text.indexOf('$$', m.index);
    if (body < 0) continue;
    writeFileSync(join(root, file), `${text.slice(0, body + 2)}\n  -- edited without a migration\n${text.slice(body + 2)}`);
    return { root, file, fn: m[1]!.toLowerCase() };
  }
  throw new Error('no sql/ source defines a function with a $$ body');
}
async function withDb<T>(name: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
  try { return await fn(sql); } finally { await sql.end(); }
}

/** Every sql/ source applied in the order migrate.ts and the generated migrations use. */
const applySources = (name: string, root: string) => withDb(name, async (sql) => {
  const sources = await sourceFiles(root);
  await sql.begin(async (tx) => {
    await tx`set local check_function_bodies = off`;
    for (const f of sources) await tx.unsafe(f.text);
  });
});

const catalogOf = (name: string): Promise<CatalogEntry[]> => withDb(name, catalog);
const workerRevisions = (name: string) => withDb(name, (sql) => sql`select id, breaking from graphile_worker.migrations order by id`);

describe('supabase/migrations hold everything sql/ holds', () => {
  const admin = postgres(urlOf('postgres'), { max: 1, onnotice: () => {} });
  let edit: ReturnType<typeof editedCopy>;

  beforeAll(async () => {
    edit = editedCopy((await sourceFiles(repoRoot)).map((f) => f.path));
    for (const name of Object.values(db)) {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
    }
    await admin.unsafe(`create database ${db.migrations}`);
    await withDb(db.migrations, (sql) => pushLikeSupabase(sql, repoRoot, { seed: true }));
    // copies of that database (a template must have no session open)
    for (const name of [db.sources, db.edited, db.generated]) await admin.unsafe(`create database ${name} template ${db.migrations}`);
    await admin.unsafe(`create database ${db.worker}`);
    await applySources(db.sources, repoRoot);
    await applySources(db.edited, edit.root);
  }, 120_000);

  afterAll(async () => {
    for (const name of Object.values(db)) await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
    if (edit) rmSync(edit.root, { recursive: true, force: true });
  });

  it('sql/ has no change the generated migrations lack (else: npm run db:migration -- <name>)', async () => {
    const drift = describeDrift(await sourcesDrift(repoRoot, graphileWorkerRevision));
    expect(drift, `run \`npm run db:migration -- <name>\`:\n${drift.join('\n')}`).toEqual([]);
  });

  it('a database from the migrations alone has the functions, policies, triggers, grants, comments, views and indexes of sql/', async () => {
    const diffs = diffCatalogs(await catalogOf(db.migrations), await catalogOf(db.sources));
    const lines = describeDifferences(diffs, labels);
    expect(lines, `sql/ and supabase/migrations disagree (run \`npm run db:migration -- <name>\`):\n${lines.join('\n')}`).toEqual([]);
  });

  it('names a function edited in sql/ without a new migration, and the file it is in', async () => {
    const diffs = diffCatalogs(await catalogOf(db.migrations), await catalogOf(db.edited));
    expect(diffs.map((d) => `${d.kind} ${d.name.replace(/\(.*/, '')}`)).toContain(`function ${edit.fn}`);
    const line = describeDifferences(diffs, labels).find((l) => l.startsWith(`function ${edit.fn}(`));
    expect(line).toContain(`function ${edit.fn}(`);
    expect(line).toContain('sql/: ');
    expect(line).toContain('-- edited without a migration');
    expect((await sourcesDrift(edit.root, graphileWorkerRevision)).changed).toContain(edit.file);
  });

  it('npm run db:migration puts the edit in a new migration that makes the databases agree again', async () => {
    const generated = await generateMigration(edit.root, 'edit_probe');
    // the edited file, and public_execute.sql, which follows every change
    expect(generated?.included).toEqual(expect.arrayContaining([edit.file, 'sql/security/public_execute.sql']));
    expect(await sourcesDrift(edit.root, graphileWorkerRevision)).toMatchObject({ changed: [], added: [], removed: [], graphileWorker: null });
    expect(await generateMigration(edit.root, 'again')).toBeNull();
    const text = readFileSync(join(edit.root, generated!.file), 'utf8');
    await withDb(db.generated, (sql) => sql.begin((tx) => tx.unsafe(text)));
    expect(describeDifferences(diffCatalogs(await catalogOf(db.generated), await catalogOf(db.edited)), labels)).toEqual([]);
  });

  it("the migrations install graphile-worker's schema as its own installer does, so runMigrations finds nothing to do", async () => {
    await runMigrations({ connectionString: urlOf(db.worker) });
    const all = (await catalogOf(db.migrations)).filter((e) => /\bgraphile_worker\b/.test(e.name));
    // what Potentia adds to graphile-worker's tables itself (hand-written migrations): there, and
    // not compared with the installer's schema
    expect(all.filter((e) => OWN_GRAPHILE_ADDITIONS.test(e.name)).map((e) => e.kind).sort()).toEqual(['comment', 'index']);
    const ours = all.filter((e) => !OWN_GRAPHILE_ADDITIONS.test(e.name)).map(withoutAppRoleGrants);
    const theirs = (await catalogOf(db.worker)).filter((e) => /\bgraphile_worker\b/.test(e.name));
    expect(ours.length).toBeGreaterThan(10);
    expect(describeDifferences(diffCatalogs(ours, theirs), { left: 'migrations', right: 'runMigrations' })).toEqual([]);

    const revisions = await workerRevisions(db.migrations);
    expect(revisions.at(-1)?.id).toBe(graphileWorkerRevision);
    expect(await workerRevisions(db.worker)).toEqual(revisions);
    await runMigrations({ connectionString: urlOf(db.sources) });
    expect(await workerRevisions(db.sources)).toEqual(revisions);
  });
});
