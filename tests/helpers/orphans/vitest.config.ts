import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// tests/integration/chaos-orphans.test.ts's fixture, run alone (npm test does not include it)
export default defineConfig({
  root: fileURLToPath(new URL('../../..', import.meta.url)),
  test: {
    include: ['tests/helpers/orphans/orphans.fixture.ts'],
    hookTimeout: 60_000,
  },
});
