/**
 * How the migrations a database recorded (supabase_migrations.schema_migrations) compare with the
 * files of a checkout (supabase/migrations): the one classification of `npm run db:migrate`, its
 * --check (src/db/migrate.ts) and a role's start (src/db/migrated.ts). Pure: the callers read the
 * records and the files.
 */

/** A record of schema_migrations; name and checksum null where the table lacks the column or the role may not read it. */
export type AppliedMigration = { version: string; name: string | null; checksum?: string | null };

/** The version of a migration file (`…/<version>_<name>.sql`). */
export function versionOf(file: string): string {
  return file.split('/').pop()!.split('_')[0]!;
}

/** An applied migration as its file is named, `<version>_<name>` (the version alone when the name is not recorded). */
export function recordName(r: AppliedMigration): string {
  return r.name ? `${r.version}_${r.name}` : r.version;
}

/**
 * The applied migrations no file of `files` has the version of, as `<version>_<name>` in version
 * order, in two kinds:
 * - `newer`: newer than the newest file, what a newer release or another branch applied (a release
 *   adds migrations after the ones it has), which `supabase migration list` shows as remote only.
 *   Nothing undoes them (migrations have no down); `supabase migration repair --status reverted
 *   <version>` deletes a record.
 * - `removed`: older than the newest file: not a newer release's, but a file deleted from
 *   supabase/migrations, or one of a branch this checkout does not have.
 */
export function unknownMigrations(applied: AppliedMigration[], files: string[]): { newer: string[]; removed: string[] } {
  const known = new Set(files.map(versionOf));
  const newest = [...known].sort().pop() ?? '';
  const unknown = applied.filter((r) => !known.has(r.version)).sort((a, b) => (a.version < b.version ? -1 : 1));
  return {
    newer: unknown.filter((r) => r.version > newest).map(recordName),
    removed: unknown.filter((r) => r.version < newest).map(recordName),
  };
}

/**
 * A file not applied under its own version whose text another migration has, so that running it
 * would apply the same work a second time (a data migration's rows twice):
 * - `renamed`: an applied migration whose version has no file any more (a rebase gave the file a
 *   new timestamp); `of` is that migration as `<version>_<name>`;
 * - `copied`: an applied migration whose file is still here (the file copied under a new version,
 *   a branch merge that brought the same migration twice); `of` is that file;
 * - `pending`: another file, of an earlier version, not applied either; `of` is that file.
 */
export type SameText = { file: string; of: string; kind: 'renamed' | 'copied' | 'pending' };

/**
 * The files of `files` (with the sha256 of their text, as schema_migrations records it) that repeat
 * another migration's text (SameText), in file order. Only files not applied yet are looked at, so
 * a history that already holds two equal texts is left as it is; a file without statements (empty,
 * or comments only) does nothing when run twice and is not looked at. Records without a checksum
 * (made by the Supabase CLI before db:migrate added the column) cannot be compared.
 */
export function sameTextMigrations(applied: AppliedMigration[], files: { file: string; checksum: string; statements: number }[]): SameText[] {
  const versions = new Set(files.map((f) => versionOf(f.file)));
  const recorded = new Set(applied.map((r) => r.version));
  const fileOf = new Map(files.map((f) => [versionOf(f.file), f.file] as const));
  const appliedByChecksum = new Map<string, { of: string; kind: 'renamed' | 'copied' }>();
  // a renamed record wins over a copied one: its file's new name is what the run would take for new
  for (const r of applied) {
    if (!r.checksum) continue;
    const entry = versions.has(r.version) ? { of: fileOf.get(r.version)!, kind: 'copied' as const } : { of: recordName(r), kind: 'renamed' as const };
    const known = appliedByChecksum.get(r.checksum);
    if (!known || (known.kind === 'copied' && entry.kind === 'renamed')) appliedByChecksum.set(r.checksum, entry);
  }
  const pendingByChecksum = new Map<string, string>();
  const found: SameText[] = [];
  for (const f of files) {
    if (recorded.has(versionOf(f.file)) || f.statements === 0) continue;
    const applied = appliedByChecksum.get(f.checksum);
    const pending = pendingByChecksum.get(f.checksum);
    if (applied) found.push({ file: f.file, ...applied });
    else if (pending) found.push({ file: f.file, of: pending, kind: 'pending' });
    else pendingByChecksum.set(f.checksum, f.file);
  }
  return found;
}
