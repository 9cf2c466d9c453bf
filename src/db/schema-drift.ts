import type { Sql, TransactionSql } from 'postgres';
import { catalog } from './catalog.ts';

/**
 * Changes made to Potentia's schema outside migrations (a function replaced by hand, a policy
 * dropped, a grant given): `npm run db:migrate` keeps a fingerprint of what the migrations left
 * in `supabase_migrations.potentia_catalog` (each object of catalog.ts as text: functions with
 * their bodies, relations with their owner, RLS flags and grants, columns, indexes, constraints,
 * triggers, policies, views, types, default privileges, the realtime publication), and compares the
 * database with it before it applies anything. Before, a hand-edited function went unsaid: migrate
 * answered "up to date", and the next migration replacing it dropped the edit silently.
 *
 * Scope: the schemas app, api and internal, and auth and realtime where sql/compat made them (on
 * Supabase they are the platform's, which changes them itself). Left out: graphile_worker (its own
 * installer's, which a worker of a newer version runs), comments (they change nothing), extensions,
 * and the daily partitions of realtime.messages (made and dropped by the cleanup job). A
 * definition's parentheses and white space are not compared: a dump restored by pg_restore prints
 * some expressions with other parentheses than the migrations wrote (`((a AND b) AND c)` becomes
 * `(a AND b AND c)`), and a change of parentheses alone is not one anyone makes by hand.
 *
 * The fingerprint follows the migrations step by step: each step that applies something records,
 * in its own transaction, the objects it changed (before and after it), so a run never mistakes
 * another run's work, or its own, for drift; a change made by hand stays reported until a migration
 * changes that object again or `--accept-drift` takes the schema as it is.
 */
export type Fingerprint = Map<string, { kind: string; name: string; def: string }>; // by `${kind} ${name}`

const OWN_SCHEMAS = ['app', 'api', 'internal'];
const COMPAT_SCHEMAS = ['auth', 'realtime'];
const LEFT_OUT_KINDS = new Set(['comment', 'extension', 'event trigger']);

/** The fingerprint, and the migrations whose work it holds: one applied by something else
 *  (`supabase db push`) changed objects without it, so it is then taken anew instead of compared. */
export const FINGERPRINT_TABLES = `
  create table if not exists supabase_migrations.potentia_catalog
    (kind text not null, name text not null, def text not null, primary key (kind, name));
  create table if not exists supabase_migrations.potentia_catalog_migrations (version text primary key)`;

/** The schema of the objects of a catalog entry, as catalog.ts names them. */
function schemaOf(kind: string, name: string): string | null {
  if (kind === 'schema') return name;
  if (kind === 'default privileges') return / in (\S+) on /.exec(name)?.[1] ?? null;
  if (kind === 'publication') return name.startsWith('potentia') ? 'app' : null; // the realtime publication is ours
  return name.split('.', 1)[0] ?? null;
}

export async function fingerprint(sql: Sql | TransactionSql, compatMark: string): Promise<Fingerprint> {
  const [scope] = await sql<{ schemas: string[]; partitions: string[] }[]>`
    select array(select nspname::text from pg_namespace where nspname = any(${OWN_SCHEMAS})
                   or (nspname = any(${COMPAT_SCHEMAS}) and obj_description(oid, 'pg_namespace') = ${compatMark})) as schemas,
           array(select oid::regclass::text from pg_class where relispartition and relkind in ('r', 'p')) as partitions`;
  const schemas = new Set(scope!.schemas);
  const partitions = new Set(scope!.partitions);
  const out: Fingerprint = new Map();
  for (const e of await catalog(sql as Sql)) {
    if (LEFT_OUT_KINDS.has(e.kind) || partitions.has(e.name) || (e.owner && partitions.has(e.owner))) continue;
    const schema = schemaOf(e.kind, e.name);
    if (schema === null || !schemas.has(schema)) continue;
    out.set(`${e.kind} ${e.name}`, { kind: e.kind, name: e.name, def: e.def });
  }
  return out;
}

export async function readFingerprint(tx: Sql | TransactionSql): Promise<Fingerprint> {
  const rows = await tx<{ kind: string; name: string; def: string }[]>`select kind, name, def from supabase_migrations.potentia_catalog`;
  return new Map(rows.map((r) => [`${r.kind} ${r.name}`, { ...r }]));
}

/** Whether two definitions are the same but for parentheses and white space (see above). */
const same = (a: string, b: string) => a.replace(/[()\s]/g, '') === b.replace(/[()\s]/g, '');
const clip = (line: string) => (line.length > 160 ? `${line.slice(0, 157)}…` : line);

/** One line per object that differs from the recorded fingerprint: changed (with its first differing line), added or removed. */
export function describeSchemaDrift(recorded: Fingerprint, now: Fingerprint): string[] {
  const lines: string[] = [];
  for (const [key, { def }] of now) {
    const was = recorded.get(key);
    if (was === undefined) lines.push(`${key}: added`);
    else if (!same(was.def, def)) {
      const a = was.def.split('\n');
      const b = def.split('\n');
      const at = Math.max(0, a.findIndex((line, n) => line !== b[n]));
      lines.push(`${key}: changed (line ${at + 1} was: ${clip(a[at]?.trim() ?? '(end)')}; is now: ${clip(b[at]?.trim() ?? '(end)')})`);
    }
  }
  for (const key of recorded.keys()) if (!now.has(key)) lines.push(`${key}: removed`);
  return lines.sort();
}

/** Records what changed between `before` and `after` (a step's own work) into the fingerprint. */
export async function recordChanges(tx: TransactionSql, before: Fingerprint, after: Fingerprint): Promise<void> {
  const set = [...after].filter(([key, e]) => before.get(key)?.def !== e.def).map(([, e]) => e);
  const gone = [...before].filter(([key]) => !after.has(key)).map(([, e]) => e);
  if (set.length > 0) {
    await tx`insert into supabase_migrations.potentia_catalog ${tx(set, 'kind', 'name', 'def')}
             on conflict (kind, name) do update set def = excluded.def`;
  }
  if (gone.length > 0) {
    await tx`delete from supabase_migrations.potentia_catalog c
             using unnest(${gone.map((g) => g.kind)}::text[], ${gone.map((g) => g.name)}::text[]) as g(kind, name)
             where c.kind = g.kind and c.name = g.name`;
  }
}

/** Takes the schema as it is now as what the migrations applied so far left. */
export async function recordAll(tx: TransactionSql, now: Fingerprint): Promise<void> {
  await tx`delete from supabase_migrations.potentia_catalog`;
  await recordChanges(tx, new Map(), now);
  await tx`delete from supabase_migrations.potentia_catalog_migrations`;
  await tx`insert into supabase_migrations.potentia_catalog_migrations select version from supabase_migrations.schema_migrations`;
}

/** A migration this run applied (and recorded the changes of). */
export async function recordMigration(tx: TransactionSql, version: string): Promise<void> {
  await tx`insert into supabase_migrations.potentia_catalog_migrations (version) values (${version}) on conflict do nothing`;
}

/** Whether the fingerprint can be compared: why not, or null when it can. */
export async function fingerprintUnusable(tx: Sql | TransactionSql, recorded: Fingerprint): Promise<string | null> {
  if (recorded.size === 0) return 'no fingerprint of the schema recorded yet (db:migrate records one)';
  const [row] = await tx<{ n: number }[]>`select count(*)::int as n from supabase_migrations.schema_migrations s
    where not exists (select from supabase_migrations.potentia_catalog_migrations c where c.version = s.version)`;
  if (row!.n > 0) {
    return `${row!.n} migration(s) were applied without db:migrate since the fingerprint of the schema was recorded (supabase db push?): ` +
      'db:migrate takes it anew';
  }
  return null;
}
