// One definition of an id (src/uuid.ts), which @potentia/client copies (it is built on its own):
// the copy must be the same pattern, and the HTTP schema and the H1 protocol must read ids as it does.
import { expect, it } from 'vitest';
import { canonicalUuid as clientCanonical, UUID_PATTERN as CLIENT_PATTERN } from '../../packages/client/src/uuid.ts';
import { Uuid } from '../../src/http/schemas.ts';
import { MutateMessage } from '../../src/realtime/h1-protocol.ts';
import { canonicalUuid, UUID_PATTERN } from '../../src/uuid.ts';

const taken = ['12345678-1234-1234-1234-123456789abc', '12345678-1234-1234-1234-123456789ABC', '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', crypto.randomUUID(), crypto.randomUUID().toUpperCase()];
const refused = ['{12345678-1234-1234-1234-123456789abc}', '123456781234123412341234567890ab', '1234-5678-1234-1234-1234-56789abc',
  '12345678-1234-1234-1234-123456789abg', ' 12345678-1234-1234-1234-123456789abc', '12345678-1234-1234-1234-123456789abc\n', ''];

it('the client checks ids with the server\'s pattern', () => {
  expect(CLIENT_PATTERN).toBe(UUID_PATTERN);
  for (const s of [...taken, ...refused]) expect(clientCanonical(s), s).toBe(canonicalUuid(s));
});

it('the HTTP schema and the H1 protocol take any 32 hex digits as 8-4-4-4-12 in either case, and nothing else', () => {
  const mutate = (block_id: string) => MutateMessage.safeParse({ type: 'mutate', client_op_id: 'x', action: 'delete', block_id, base_version: 1 }).success;
  for (const s of taken) {
    expect(Uuid.safeParse(s).success, s).toBe(true);
    expect(mutate(s), s).toBe(true);
    expect(canonicalUuid(s)).toBe(s.toLowerCase());
  }
  for (const s of refused) {
    expect(Uuid.safeParse(s).success, s).toBe(false);
    expect(mutate(s), s).toBe(false);
    expect(canonicalUuid(s)).toBe(null);
  }
});
