import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';

/** A pool on the migrated test database (scripts/test migrates it fresh before vitest runs). */
export function testDatabase(max = 5): Database {
  return createDatabase(testDatabaseUrl(), { max, applicationName: 'potentia-test' });
}
