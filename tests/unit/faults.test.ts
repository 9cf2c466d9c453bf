// isConnectionFailure (src/db/faults.ts): which errors mean the session, not the statement, failed;
// the HTTP layer answers those 503 (retry) and the canvas lanes fail a whole transaction on them.
import { describe, expect, it } from 'vitest';
import { couldNotConnect, isConnectionFailure, poolerLoginRefusal } from '../../src/db/faults.ts';

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

describe('couldNotConnect', () => {
  it("PgBouncer's refusals of a session it has no server for (08P01 with its message) are a failed connect: answered 503, not retried at once", () => {
    for (const message of ['server login has been failing, cached error: connect failed (server_login_retry)', 'query_wait_timeout',
      'pgbouncer cannot connect to server', 'no more connections allowed (max_client_conn)',
      // its own login refusals: a wrong password (SCRAM, MD5), a user or database it does not know
      'SASL authentication failed', 'password authentication failed', 'no such user', 'no such database: potentia',
      // the server's own refusal passed on (deploy/pgbouncer/pgbouncer.ini's * entry)
      'database "potentia_gone" does not exist']) {
      expect(couldNotConnect({ code: '08P01', message }), message).toBe(true);
    }
    expect(couldNotConnect({ code: 'ECONNREFUSED' })).toBe(true);
  });

  it('a lost session or another protocol error is not: withRequest may run the request again', () => {
    for (const err of [{ code: '08P01', message: 'invalid message format' }, { code: '57P01', message: 'terminating connection due to administrator command' },
      { code: 'CONNECTION_CLOSED' }, { code: '08P01' }, null]) {
      expect(couldNotConnect(err), JSON.stringify(err)).toBe(false);
    }
  });
});

describe('poolerLoginRefusal', () => {
  // one list for the start check (src/db/migrated.ts) and couldNotConnect: the two kept their own regexes, which had drifted apart
  it("PgBouncer's login refusals (08P01, told by their message) get the code PostgreSQL gives the same refusal", () => {
    const messages = ['database "potentia_gone" does not exist', 'no such database: potentia', 'SASL authentication failed',
      'password authentication failed', 'md5 authentication failed', 'no such user'];
    expect(Object.fromEntries(messages.map((message) => [message, poolerLoginRefusal({ code: '08P01', message })]))).toEqual({
      'database "potentia_gone" does not exist': '3D000', 'no such database: potentia': '3D000', 'SASL authentication failed': '28P01',
      'password authentication failed': '28P01', 'md5 authentication failed': '28P01', 'no such user': '28P01',
    });
  });

  it('its refusals for want of a server, another code, or another protocol error are none', () => {
    for (const err of [{ code: '08P01', message: 'query_wait_timeout' }, { code: '08P01', message: 'pgbouncer cannot connect to server' },
      { code: '08P01', message: 'invalid message format' }, { code: '28P01', message: 'password authentication failed' }, { code: '08P01' }, null]) {
      expect(poolerLoginRefusal(err), JSON.stringify(err)).toBeUndefined();
    }
  });
});
