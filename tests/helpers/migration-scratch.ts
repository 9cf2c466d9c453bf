import postgres from 'postgres';
import { testDatabaseUrl } from '../../src/config.ts';

/** A scratch database of a migration test (migrationScratch). */
export type MigrationScratch = {
  /** `<the test database's name>_<name>_<pid>`: under the test database's prefix, one a test run */
  name: string;
  /** the test database's URL, naming this database */
  url: string;
  /** the test database's URL naming another database of the server (a second scratch, `postgres`) */
  urlOf(db: string): string;
  /** a connection to the server's `postgres` database, for the databases a test makes itself */
  admin: postgres.Sql;
  /** drops the database if a killed run left it, then creates it; `clause` follows `create database <name>` (`template x`, `owner r`) */
  create(clause?: string): Promise<void>;
  /** drops the database and the `others` (force: sessions left open end), then ends `admin` */
  close(others?: string[]): Promise<void>;
};

/**
 * The lifecycle of a migration test's scratch database, in place of the same admin connection,
 * drop-and-create and drop in each file: `const scratch = migrationScratch('migrate_renamed')`,
 * `await scratch.create()` in beforeAll, `await scratch.close()` in afterAll (after the test's own
 * connections end). Named after the test database (TEST_DATABASE_URL), so a run's scratch
 * databases share its prefix and two runs on one server do not meet.
 */
export function migrationScratch(suffix: string): MigrationScratch {
  const urlOf = (db: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${db}`; return u.toString(); };
  const name = `${new URL(testDatabaseUrl()).pathname.slice(1)}_${suffix}_${process.pid}`;
  const admin = postgres(urlOf('postgres'), { max: 1, onnotice: () => {} });
  const drop = (db: string) => admin.unsafe(`drop database if exists ${db} with (force)`);
  return {
    name,
    url: urlOf(name),
    urlOf,
    admin,
    async create(clause = '') {
      await drop(name);
      await admin.unsafe(`create database ${name} ${clause}`);
    },
    async close(others = []) {
      for (const db of [name, ...others]) await drop(db);
      await admin.end();
    },
  };
}
