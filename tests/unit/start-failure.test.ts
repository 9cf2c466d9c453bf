import { describe, expect, it } from 'vitest';
import { listenFailureAdvice, startFailureAdvice } from '../../src/start-failure.ts';
import { postgresLabel } from '../../src/url-redaction.ts';

// The advice names the URLs, never their passwords, however the password is written.
describe('startFailureAdvice', () => {
  const advice = (databaseUrl: string, directDatabaseUrl?: string) =>
    startFailureAdvice({ code: 'ECONNREFUSED', message: '' }, { databaseUrl, directDatabaseUrl });

  it('hides a password whatever it holds: unescaped /, #, ?, @, percent escapes, spaces', () => {
    // URL read 12/34 as port and path (and 5432#9x as port and fragment) and printed them as they were
    for (const [url, shown] of [
      ['postgres://u:12/34@h/db', 'postgres://u:***@h/db'],
      ['postgres://u:5432#9x@h:6543/db', 'postgres://u:***@h:6543/db'],
      ['postgres://u:1?secret@h/db', 'postgres://u:***@h/db'],
      ['postgres://u:p@ss@h/db', 'postgres://u:***@h/db'],
      ['postgres://u:p%40ss@h/db?sslmode=require', 'postgres://u:***@h/db?sslmode=require'],
      ['postgresql://u:se cret@h/db', 'postgresql://u:***@h/db'],
    ]) {
      const text = advice(url!, url);
      expect(text).toContain(`DATABASE_URL=${shown}, DIRECT_DATABASE_URL=${shown}`);
      expect(text).not.toMatch(/12\/34|9x|secret|ss@|cret/);
    }
  });

  it('names a URL without a password, and a multi-host one, as it is', () => {
    expect(advice('postgres://u@h/db')).toContain('DATABASE_URL=postgres://u@h/db)');
    expect(advice('postgres://h:5432/db')).toContain('DATABASE_URL=postgres://h:5432/db)');
    expect(advice('postgres://u:pw@h1:5432,h2:5433/db')).toContain('DATABASE_URL=postgres://u:***@h1:5432,h2:5433/db)');
    expect(advice('host=h password=pw')).toContain('DATABASE_URL=(not a URL)');
  });
});

describe('startFailureAdvice for potentia_app\'s missing grants', () => {
  it('has the owner run sql/security/app_role.sql, through the owner\'s URL: not DIRECT_DATABASE_URL, which names the login role lacking them', () => {
    // the shipped env file's DIRECT_DATABASE_URL is potentia_runtime (deploy/systemd/potentia.env.example);
    // the owner is reached through OWNER_URL, given on the command line (docs/self-hosting.md, "Database")
    const text = startFailureAdvice({ code: 'app_role_grants_missing', message: '' },
      { databaseUrl: 'postgres://potentia_runtime:pw@db:6432/potentia', directDatabaseUrl: 'postgres://potentia_runtime:pw@db:5432/potentia' });
    expect(text).toContain('run psql "$OWNER_URL" -f sql/security/app_role.sql once');
    expect(text).not.toContain('psql "$DIRECT_DATABASE_URL"');
  });
});

describe('postgresLabel (upgrade:v1 names its databases with it)', () => {
  it('shows host and database, never the password, however the password is written', () => {
    expect(postgresLabel('postgres://u:secret@db.example:6543/app')).toBe('postgres db.example:6543/app');
    // through URL alone this was 'postgres u:12/34@h/db': the password read as a port and a path
    expect(postgresLabel('postgres://u:12/34@h/db')).toBe('postgres h/db');
  });
});

describe('listenFailureAdvice', () => {
  const at = { host: 'app.internal', port: 8000 };
  it('names HOST when it does not resolve or is not an address of this machine, not the database', () => {
    // `getaddrinfo ENOTFOUND <HOST>` was answered as the database server not answering
    expect(listenFailureAdvice({ code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: 'app.internal' }, at))
      .toBe('HOST=app.internal is not an address of this machine (ENOTFOUND): set HOST to one of its addresses or host names, 0.0.0.0 (every IPv4 address) or :: (every address)');
    expect(listenFailureAdvice({ code: 'EADDRNOTAVAIL', syscall: 'listen', address: '10.9.9.9' }, { host: '10.9.9.9', port: 8000 }))
      .toMatch(/^HOST=10\.9\.9\.9 is not an address of this machine \(EADDRNOTAVAIL\)/);
    expect(listenFailureAdvice({ code: 'EADDRINUSE' }, at)).toBe('port 8000 on app.internal is in use (another npm start?): stop that process or set PORT to a free port');
  });

  it('leaves the database\'s host to startFailureAdvice', () => {
    const db = { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: 'db.internal' };
    expect(listenFailureAdvice(db, at)).toBeUndefined();
    expect(startFailureAdvice({ ...db, message: '' }, { databaseUrl: 'postgres://u@db.internal/p' })).toMatch(/^the database server does not answer/);
  });
});
