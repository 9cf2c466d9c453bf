// vitest setupFiles: before a file of tests/integration, tests/hostile or tests/browser (which use
// the test database) runs, check that TEST_DATABASE_URL is migrated, and fail the file with what to
// run when it is not, instead of a raw `relation … does not exist` per test. Unit files are left
// alone: most use no database.
import { beforeAll, expect } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { testDatabaseProblem } from './database-ready.ts';

beforeAll(async () => {
  const file = expect.getState().testPath ?? '';
  if (!/\/tests\/(integration|hostile|browser)\//.test(file)) return;
  const problem = await testDatabaseProblem(testDatabaseUrl());
  if (problem) throw new Error(problem);
});
