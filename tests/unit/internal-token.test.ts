import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';

// INTERNAL_TOKEN is sent as Authorization: Bearer <token>, where a comma reads as several
// credentials (src/http/authorization.ts): a token holding one would get every /metrics scrape
// answered 400, so the server refuses it at start, naming the variable.

describe('INTERNAL_TOKEN', () => {
  it('with a comma is refused at start, naming the variable and why', () => {
    expect(() => loadConfig({ INTERNAL_TOKEN: 'abcdefgh,ijklmnopq' })).toThrow(/^invalid environment: INTERNAL_TOKEN: no comma: it is sent as Authorization: Bearer/);
  });

  it('without one is taken as given', () => {
    expect(loadConfig({ INTERNAL_TOKEN: 'abc-DEF_0123456789+/=' }).internalToken).toBe('abc-DEF_0123456789+/=');
  });
});
