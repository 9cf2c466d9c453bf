import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts', 'tests/integration/**/*.test.ts', 'tests/hostile/**/*.test.ts',
              'tests/browser/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // a file that uses the test database fails at once, saying what to run, when it is not migrated
    setupFiles: ['tests/helpers/database-ready-setup.ts'],
    // integration files share one database: run files one after another
    fileParallelism: false,
  },
});
