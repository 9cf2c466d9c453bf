/**
 * Migrations rewritten after databases applied them, only where the file as committed could not be
 * applied by `supabase db push` at all, and only by a change that does the same work: for each
 * version, the sha256 a database may have recorded for the earlier text. `npm run db:migrate`
 * accepts such a record as applied and records the current text (src/db/migrate.ts); any other
 * difference is still refused (MigrationChangedError). tests/unit/migrations-immutable.test.ts
 * holds the matching git blobs.
 */
export const SUPERSEDED_MIGRATIONS: Readonly<Record<string, { sha256: readonly string[]; why: string }>> = {
  // a top-level LOCK TABLE, refused outside a transaction block as the CLI sends statements: the
  // same lock taken in a do block (tests/unit/migrations-cli.test.ts)
  '20261202015448': {
    sha256: ['171c2d47384fcbb3863810a8956ba28bc6255e2d0265e32f7b5abd326083c230'],
    why: 'supabase db push: LOCK TABLE can only be used in transaction blocks',
  },
  '20261202025806': {
    sha256: ['ee8a47f382e7a6016c09b0aea36c308601224ab40fee954e327871e92b5434ee'],
    why: 'supabase db push: LOCK TABLE can only be used in transaction blocks',
  },
};
