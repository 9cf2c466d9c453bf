// What an HTTP caller gets for each kind of database error (src/http/errors.ts apiErrorFromDatabase).
import { describe, expect, it } from 'vitest';
import { apiErrorFromDatabase } from '../../src/http/errors.ts';

describe('database errors as HTTP answers', () => {
  it.each([
    ['53300', 'too many connections'],
    ['53200', 'out of memory'],
    ['53100', 'disk full'],
  ])('insufficient resources (%s, %s) is 503 unavailable with retry_after, not a 500', (code) => {
    const err = apiErrorFromDatabase(Object.assign(new Error('sorry, too many clients already'), { code }));
    expect(err.status).toBe(503);
    expect(err.body()).toMatchObject({ error: { code: 'unavailable', retry_after: 1 } });
  });
  it('a lost connection is 503 unavailable; a bad value is 400 invalid_input; anything else 500 internal', () => {
    expect(apiErrorFromDatabase(Object.assign(new Error('terminating connection'), { code: '57P01' })).status).toBe(503);
    expect(apiErrorFromDatabase(Object.assign(new Error('invalid input syntax'), { code: '22P02' })).status).toBe(400);
    expect(apiErrorFromDatabase(Object.assign(new Error('boom'), { code: 'XX000' })).status).toBe(500);
  });
  it.each(['40P01', '40001'])('a deadlock or serialization failure (%s) rolled the request back: 503 unavailable, retry', (code) => {
    const err = apiErrorFromDatabase(Object.assign(new Error('deadlock detected'), { code }));
    expect(err.status).toBe(503);
    expect(err.body()).toMatchObject({ error: { code: 'unavailable', retry_after: 1 } });
  });
});
