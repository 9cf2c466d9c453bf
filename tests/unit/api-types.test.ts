import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { API_TYPES_PATH, generateApiTypes } from '../../scripts/api-types.ts';

// The client types are the contract's: packages/client/src/api-types.ts must be what `npm run api:types`
// generates from the current routes (as src/db/types.ts must match the schema, scripts/test).

describe('packages/client/src/api-types.ts', () => {
  it('matches a fresh generation from the OpenAPI document (run `npm run api:types` and commit the result)', async () => {
    const fresh = await generateApiTypes();
    const committed = readFileSync(API_TYPES_PATH, 'utf8');
    // one line for a stale file, not a 2,500-line diff
    expect(committed === fresh, 'packages/client/src/api-types.ts is stale: run `npm run api:types` and commit the result').toBe(true);
  });
});
