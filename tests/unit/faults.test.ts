// isConnectionFailure (src/db/faults.ts): which errors mean the session, not the statement, failed;
// the HTTP layer answers those 503 (retry) and the canvas lanes fail a whole transaction on them.
import { describe, expect, it } from 'vitest';
import { isConnectionFailure } from '../../src/db/faults.ts';

describe('isConnectionFailure', () => {
  it('the server ended the session: shutdown, crash, database dropped, idle timeouts, class 08, the driver lost the socket', () => {
    for (const code of ['57P01', '57P02', '57P03', '57P04', '57P05', '25P03', '08006', '08P01', 'ECONNRESET', 'CONNECTION_CLOSED', 'CONNECTION_DESTROYED']) {
      expect(isConnectionFailure({ code }), code).toBe(true);
    }
  });

  it('the statement or the request failed: not the connection (nor a bad password, which a retry does not mend)', () => {
    for (const err of [{ code: '25P02' }, { code: '40P01' }, { code: '22012' }, { code: '28P01', severity: 'FATAL' }, { code: '53300' }, new Error('x'), null, undefined, 'text']) {
      expect(isConnectionFailure(err), JSON.stringify(err)).toBe(false);
    }
  });
});
