import type { Sql } from 'postgres';

/**
 * Whether the database `npm run db:migrate` was pointed at takes writes, checked before its first
 * step: a standby in recovery (a read replica's URL taken for the primary's) or a session whose
 * default_transaction_read_only is on (a database frozen on purpose, a role or a pooler meant for
 * reading). Before, the first step failed with Postgres's words ("cannot execute CREATE SCHEMA in
 * a read-only transaction") and "fix the cause, then run the same command again", which says
 * neither why nor where the setting is.
 */
export class ReadOnlyTargetError extends Error {
  constructor(readonly why: string, readonly fix: string) {
    super(`${why}, so nothing was changed. ${fix}; then run the same command again.`);
  }
}

/** A name as SQL writes it: bare when it may be, else double-quoted. */
const ident = (name: string) => (/^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`);

const ELSEWHERE = 'If it is a replica or a database frozen on purpose, point --database-url (or DIRECT_DATABASE_URL) at the primary';

export async function checkWritable(sql: Sql): Promise<void> {
  const [s] = await sql<{ recovery: boolean; readOnly: string; source: string | null; file: string | null; line: number | null; db: string; role: string }[]>`
    select pg_is_in_recovery() as recovery, current_setting('transaction_read_only') as "readOnly",
           s.source, s.sourcefile as file, s.sourceline as line, current_database() as db, current_user as role
    from pg_settings s where s.name = 'default_transaction_read_only'`;
  if (!s) return;
  if (s.recovery) {
    throw new ReadOnlyTargetError(`the database ${s.db} is on a standby in recovery (pg_is_in_recovery()), which takes no writes until it is promoted`,
      'Point --database-url (or DIRECT_DATABASE_URL) at the primary');
  }
  if (s.readOnly !== 'on') return;
  const db = ident(s.db);
  const role = ident(s.role);
  const owner = 'run as the database\'s owner or a superuser';
  const admin = 'run as a superuser (or a role with CREATEROLE)';
  const [where, fix] =
    s.source === 'database' ? ['set for the database', `${owner}: alter database ${db} reset default_transaction_read_only`]
    : s.source === 'user' ? [`set for the role ${s.role}`, `${admin}: alter role ${role} reset default_transaction_read_only`]
    : s.source === 'database user' ? [`set for the role ${s.role} in this database`,
      `${admin}: alter role ${role} in database ${db} reset default_transaction_read_only`]
    : s.source === 'configuration file' ? [`set in the server's configuration${s.file ? ` (${s.file}${s.line ? `:${s.line}` : ''})` : ''}`,
      'remove it there (alter system reset default_transaction_read_only, if ALTER SYSTEM set it) and reload it: select pg_reload_conf()']
    : s.source === 'client' ? ['set by the client (PGOPTIONS, or options in the URL)', 'leave it out of the options of the command\'s connection']
    : [`set by ${s.source ?? 'an unknown source'}`, 'set it off for the connection db:migrate makes'];
  throw new ReadOnlyTargetError(`the database ${s.db} takes no writes in this session: default_transaction_read_only is on, ${where}`,
    `${ELSEWHERE}; if the setting is to go, ${fix}`);
}
