import { createRequire } from 'node:module';
import { migrations } from 'graphile-worker/dist/generated/sql.js';

/**
 * Graphile Worker's schema as SQL a migration can carry. graphile-worker installs `graphile_worker`
 * itself (runMigrations, also at every worker start); the generated migrations carry the same
 * statements so a database made by `supabase db push` alone has it too (triggers enqueue jobs
 * with graphile_worker.add_job before any worker has started). Each revision is guarded exactly as
 * the library's own installer guards it (applied only above the highest recorded id, recorded in
 * graphile_worker.migrations with its breaking flag), so runMigrations finds nothing to do after
 * it, and a library upgrade carries on from there. Mirrors graphile-worker 0.17's dist/migrate.js
 * (installSchema + runMigration).
 */
const require = createRequire(import.meta.url);
// escaped as the library escapes it: the function bodies it installs then read the same, quotes included
const SCHEMA = '"graphile_worker"';

export const graphileWorkerVersion: string = require('graphile-worker/package.json').version;

const revisions = Object.entries(migrations as Record<string, string>)
  .map(([file, text]) => ({
    id: parseInt(file.slice(0, 6), 10),
    // the library's rule (lib.js BREAKING_MIGRATIONS)
    breaking: text.startsWith('--! breaking'),
    text: text.replace(/:GRAPHILE_WORKER_SCHEMA\b/g, SCHEMA),
  }))
  .sort((a, b) => a.id - b.id);

/** The highest schema revision the installed graphile-worker knows. */
export const graphileWorkerRevision = revisions.at(-1)?.id ?? 0;

function dollarQuote(text: string, base: string): string {
  let tag = base;
  for (let i = 0; text.includes(`$${tag}$`); i++) tag = `${base}${i}`;
  return `$${tag}$${text}$${tag}$`;
}

/** SQL installing revisions above `from` (0: all), idempotent on a database that has them. */
export function graphileWorkerSql(from: number): string {
  const breaking = revisions.filter((r) => r.breaking).map((r) => r.id);
  const parts = [
    `create schema if not exists ${SCHEMA};`,
    `create table if not exists ${SCHEMA}.migrations(\n  id int primary key,\n  ts timestamptz default now() not null\n);`,
    `alter table ${SCHEMA}.migrations add column if not exists breaking boolean not null default false;`,
    `update ${SCHEMA}.migrations set breaking = true where id = any('{${breaking.join(',')}}'::int[]) and not breaking;`,
  ];
  for (const r of revisions.filter((r) => r.id > from)) {
    parts.push(
      `-- graphile-worker schema revision ${r.id}${r.breaking ? ' (breaking)' : ''}\n` +
        `do $gw_do$\nbegin\n` +
        `  if coalesce((select max(id) from ${SCHEMA}.migrations), 0) < ${r.id} then\n` +
        `    insert into ${SCHEMA}.migrations (id, breaking) values (${r.id}, ${r.breaking});\n` +
        `    execute ${dollarQuote(r.text, 'gw')};\n` +
        `  end if;\nend $gw_do$;`,
    );
  }
  return parts.join('\n');
}
