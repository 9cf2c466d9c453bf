import { describe, expect, it } from 'vitest';
import { EMPTY_IS_A_VALUE, EnvSchema, loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { envDecimal } from '../../src/env-values.ts';
import { gotrueSettings } from '../../src/http/gotrue.ts';
import { resolveRole } from '../../src/roles.ts';
import { storageConfig } from '../../src/storage/config.ts';

// Every variable Potentia reads, set blank as an env file leaves it (`DIRECT_DATABASE_URL=` under
// systemd's EnvironmentFile, `docker run -e X=`): it counts as unset. Read as a value it stopped
// the start with a bare `Invalid URL` (DIRECT_DATABASE_URL=, SUPABASE_JWKS_URL=), made a number 0
// (PORT= listened on a random port, WORKER_SHUTDOWN_TIMEOUT_MS= gave running jobs no time) or was
// refused as a value (LOG_LEVEL=, TRUST_PROXY=, AUTH_EMAIL_CONFIRM=, POTENTIA_ROLE=). And a value
// that does not parse is refused naming its variable, the form it takes and what was given.

const variables = Object.keys(EnvSchema.shape);
const blankIsUnset = variables.filter((k) => !(EMPTY_IS_A_VALUE as readonly string[]).includes(k));
/** What production needs to start at all, so that each variable alone is what differs. */
const PRODUCTION = { NODE_ENV: 'production', JWT_SECRET: 'a-production-secret-of-32-characters-at-least' };
const STORAGE = ['S3_BUCKET', 'S3_REGION', 'S3_ENDPOINT', 'S3_FORCE_PATH_STYLE', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'POTENTIA_LOCAL_S3_DIR', 'LOCAL_S3_PORT'];

describe('a blank environment variable', () => {
  it('is unset for every variable of the schema, in development and in production', () => {
    expect(blankIsUnset.length).toBeGreaterThan(30);
    for (const base of [{}, PRODUCTION]) {
      const unset = loadConfig(base);
      for (const key of blankIsUnset) {
        if (key in base) continue;
        for (const blank of ['', ' ', '\t']) expect(loadConfig({ ...base, [key]: blank }), `${key}=${JSON.stringify(blank)}`).toEqual(unset);
      }
    }
  });

  it('is no port 0 and no zero timeout: PORT= listens where PORT unset does', () => {
    const config = loadConfig({ PORT: '', WORKER_SHUTDOWN_TIMEOUT_MS: '', REFRESH_TOKEN_REUSE_INTERVAL_SECONDS: '' });
    expect([config.port, config.worker.shutdownTimeoutMs, config.auth.refreshReuseInterval]).toEqual([54321, 15_000, 10]);
  });

  it('stays a value where the reference documents one: WORKER_CRONTAB= runs no crontab', () => {
    expect(EMPTY_IS_A_VALUE).toEqual(['WORKER_CRONTAB']);
    expect(loadConfig({ WORKER_CRONTAB: '' }).worker.crontab).toBe('');
  });

  it('of a required variable names it and what to set: the shipped env file (JWT_SECRET= in production)', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: '' }))
      .toThrow(/^invalid environment: JWT_SECRET: must be set in production \(it is empty\): your Supabase project's JWT secret, 32 characters at least \(or SUPABASE_JWKS_URL/);
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: '', SUPABASE_JWKS_URL: '' })).toThrow(/JWT_SECRET: must be set in production/);
    expect(() => loadConfig({ EMBEDDING_PROVIDER: 'openai', OPENAI_API_KEY: '' })).toThrow(/^invalid environment: OPENAI_API_KEY: needed with EMBEDDING_PROVIDER=openai/);
  });

  it('is unset where variables are read outside the schema: storage, AUTH_EMAIL_CONFIRM, POTENTIA_ROLE, TEST_DATABASE_URL', () => {
    const unset = storageConfig({ NODE_ENV: 'production', S3_BUCKET: 'files' });
    for (const key of STORAGE.filter((k) => k !== 'S3_BUCKET')) {
      expect(storageConfig({ NODE_ENV: 'production', S3_BUCKET: 'files', [key]: ' ' }), key).toEqual(unset);
    }
    // no bucket: a blank S3_ENDPOINT is no endpoint "set without S3_BUCKET"
    expect(storageConfig({ NODE_ENV: 'production', S3_BUCKET: '', S3_ENDPOINT: ' ' })).toEqual({ kind: 'none', reason: 'S3_BUCKET is not set' });
    expect(gotrueSettings({ AUTH_EMAIL_CONFIRM: '' })).toEqual(gotrueSettings({}));
    expect(resolveRole([], { POTENTIA_ROLE: '' })).toBe('all');
    expect(testDatabaseUrl({ DATABASE_URL: 'postgres://u@h:5432/potentia', TEST_DATABASE_URL: '' })).toBe('postgres://u@h:5432/potentia_test');
  });
});

describe('a value that does not parse', () => {
  /** Variables any non-blank text is a value of. */
  const FREE_TEXT = ['HOST', 'JWT_AUDIENCE', 'JWT_ISSUER', 'WORKER_CRONTAB', 'EMBEDDING_MODEL', 'OPENAI_API_KEY'];
  const SECRETS = ['JWT_SECRET', 'JWT_SECONDARY_SECRET', 'INTERNAL_TOKEN', 'REALTIME_CLUSTER_SECRET'];

  it('is refused naming the variable, the form it takes and what was given, for every variable of the schema', () => {
    const junk = 'x,y';
    const accepted: string[] = [];
    for (const key of variables) {
      let message = '';
      try {
        loadConfig({ [key]: junk });
        accepted.push(key);
        continue;
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, key).toMatch(new RegExp(`^invalid environment: ${key}: (expected|no comma)`));
      expect(message, key).toMatch(/\(what each variable takes: docs\/self-hosting\.md, "Environment reference"\)$/);
      expect(message, key).toContain(SECRETS.includes(key) ? '(got 3 characters)' : `(got "${junk}")`);
    }
    expect(accepted.sort()).toEqual([...FREE_TEXT].sort());
  });

  it('says the range of a number, the options of a choice, the form of a URL', () => {
    expect(() => loadConfig({ PORT: '80a' })).toThrow(/^invalid environment: PORT: expected a whole number from 0 to 65535 \(got "80a"\)/);
    expect(() => loadConfig({ DB_POOL_MAX: '0' })).toThrow(/^invalid environment: DB_POOL_MAX: expected a whole number of at least 1 \(got "0"\)/);
    expect(() => loadConfig({ WORKER_CONCURRENCY: '2.5' })).toThrow(/WORKER_CONCURRENCY: expected a whole number from 1 to 100 \(got "2.5"\)/);
    expect(() => loadConfig({ EMBEDDING_MODEL: 'm'.repeat(201) })).toThrow(/^invalid environment: EMBEDDING_MODEL: expected 200 characters at most/);
    expect(loadConfig({ EMBEDDING_MODEL: 'm'.repeat(200) }).embedding.model).toHaveLength(200);
    expect(() => loadConfig({ TRUST_PROXY: 'yes' })).toThrow(/TRUST_PROXY: expected 1 or true \(on\), 0 or false \(off\) \(got "yes"\)/);
    expect(() => loadConfig({ WORKER_MODE: 'Off' })).toThrow(/WORKER_MODE: expected one of inprocess, external, off \(got "Off"\)/);
    // a quoted value (docker's --env-file keeps the quotes) is shown as given
    expect(() => loadConfig({ DIRECT_DATABASE_URL: '"postgres://u@h/db"' }))
      .toThrow(/DIRECT_DATABASE_URL: expected a postgres:\/\/ URL, e.g. postgres:\/\/user:password@host:5432\/database \(got "\\"postgres:\/\/u@h\/db\\""\)/);
    expect(() => loadConfig({ SUPABASE_JWKS_URL: 'ftp://example.com/jwks.json' })).toThrow(/SUPABASE_JWKS_URL: expected an http\(s\):\/\/ URL, e.g. https:\/\/<ref>\.supabase\.co/);
    expect(() => loadConfig({ DATABASE_URL: 'localhost:5432/potentia' })).toThrow(/DATABASE_URL: expected a postgres:\/\/ URL.* \(got "localhost:5432\/potentia"\)/);
  });

  it('takes a number in decimal digits only: not hex, binary, octal or an exponent, which Number() read', () => {
    expect(loadConfig({ PORT: ' 8080 ' }).port).toBe(8080);
    for (const given of ['0x1F90', '0b101', '0o17', '1e3', '8080.0', 'Infinity', '٣٠٠٠', '８０', '8_080']) {
      expect(() => loadConfig({ PORT: given }), given).toThrow(`invalid environment: PORT: expected a whole number from 0 to 65535 (got ${JSON.stringify(given)})`);
    }
    expect(() => storageConfig({ S3_BUCKET: 'files', LOCAL_S3_PORT: '0x10' })).toThrow(/LOCAL_S3_PORT: expected a whole number from 0 to 65535 \(got "0x10"\)/);
  });

  it('takes a fraction in the same digits where one is meant (the scripts\' seconds: --lock-wait 4.5), and nothing else', () => {
    const seconds = envDecimal(0);
    expect(['4.5', ' 2 ', '0', '.5', '7.'].map((g) => seconds.parse(g))).toEqual([4.5, 2, 0, 0.5, 7]);
    for (const given of ['0x10', '1e3', 'Infinity', '-1', '4,5', '', '.', 'NaN']) {
      expect(seconds.safeParse(given).error?.issues[0]?.message, given).toBe('expected a number of at least 0');
    }
    expect(envDecimal(0, 10, { above: true }).safeParse('0').error?.issues[0]?.message).toBe('expected a number above 0, at most 10');
  });

  it("refuses a delay no Node timer takes (it fired after 1 ms) and seconds past Postgres's integer", () => {
    const ms = Object.keys(EnvSchema.shape).filter((k) => k.endsWith('_MS'));
    expect(ms.length).toBeGreaterThanOrEqual(10);
    for (const key of ms) {
      expect(() => loadConfig({ [key]: '2147483648' }), key).toThrow(new RegExp(`^invalid environment: ${key}: expected a whole number from \\d+ to 2147483647 \\(got "2147483648"\\)`));
      expect(loadConfig({ [key]: '2147483647' }), key).toBeTruthy();
    }
    for (const key of ['ACCESS_TOKEN_TTL_SECONDS', 'REFRESH_TOKEN_TTL_SECONDS']) {
      expect(() => loadConfig({ [key]: '9007199254740991' }), key).toThrow(`${key}: expected a whole number from 60 to 2147483647 (got "9007199254740991")`);
    }
    expect(loadConfig({ WORKER_SHUTDOWN_TIMEOUT_MS: '2147483647' }).worker.shutdownTimeoutMs).toBe(2147483647);
  });

  it('refuses spaces around a host, an audience or an issuer (docker\'s --env-file keeps them), which passed as another value', () => {
    for (const [key, given] of [['HOST', '127.0.0.1 '], ['HOST', ' 0.0.0.0'], ['JWT_AUDIENCE', 'authenticated '], ['JWT_ISSUER', 'https://x.supabase.co/auth/v1\t']]) {
      expect(() => loadConfig({ [key!]: given }), key).toThrow(new RegExp(`^invalid environment: ${key}: expected `));
      expect(() => loadConfig({ [key!]: given }), key).toThrow(`, without spaces around it (got ${JSON.stringify(given)})`);
    }
    expect(loadConfig({ HOST: '::', JWT_AUDIENCE: 'authenticated', JWT_ISSUER: 'https://x.supabase.co/auth/v1' })).toMatchObject({ host: '::', auth: { audience: 'authenticated' } });
  });

  it('counts a JWT secret\'s strength in what gives it: invisible characters and white space at its ends are refused, and 32 is counted in bytes', () => {
    // 40 zero-width spaces were 40 characters and passed the 32-character minimum: a key any
    // copy of the env file's invisible bytes reproduces, and one nobody sees in it
    const message = (secret: string) => { try { loadConfig({ NODE_ENV: 'production', JWT_SECRET: secret }); return ''; } catch (err) { return (err as Error).message; } };
    const visible = 'a-production-secret-of-32-characters-at-least';
    for (const [secret, codePoint, at] of [['\u200B'.repeat(40), 'U+200B', 1], ['\u2060'.repeat(40), 'U+2060', 1],
      ['\u3164'.repeat(32), 'U+3164', 1], [`${visible.slice(0, 5)}\u00A0${visible.slice(5)}`, 'U+00A0', 6], [`${visible}\u200D`, 'U+200D', 46],
      [`${visible.slice(0, 10)}\t${visible.slice(10)}`, 'U+0009', 11], [`x${'\u0000'.repeat(32)}`, 'U+0000', 2]] as const) {
      expect(message(secret), codePoint).toMatch(/^invalid environment: JWT_SECRET: expected your project's JWT secret without invisible characters /);
      expect(message(secret), codePoint).toContain(`(it has ${codePoint} at character ${at}): copy it again, or make one with \`openssl rand -base64 48\` (got ${[...secret].length} characters)`);
    }
    // white space at an end: an env file or a paste added it; removing it changes the key
    for (const [secret, codePoint, at] of [[`\uFEFF${visible}`, 'U+FEFF', 1], [`${visible}\t`, 'U+0009', 46], [`${visible}\r`, 'U+000D', 46], [` ${visible}`, 'U+0020', 1]] as const) {
      expect(message(secret), codePoint).toContain(`JWT_SECRET: expected your project's JWT secret without white space at its start or end (it has ${codePoint} at character ${at}): `
        + 'remove it (tokens and API keys minted while it was part of the key stop verifying: mint them again, npx tsx scripts/api-keys.ts)');
    }
    // REALTIME_CLUSTER_SECRET signs no token: its message says what removing it does to the cluster
    // (it told the operator to mint tokens and API keys again)
    let cluster = '';
    try { loadConfig({ NODE_ENV: 'production', JWT_SECRET: visible, REALTIME_CLUSTER_SECRET: `${visible}\n` }); } catch (err) { cluster = (err as Error).message; }
    expect(cluster).toContain('REALTIME_CLUSTER_SECRET: expected the secret every gateway of a deployment shares to authenticate the realtime cluster\'s messages '
      + 'without white space at its start or end (it has U+000A at character 46): remove it (on every gateway at once: a gateway whose secret differs reads none of the others\' cluster messages)');
    expect(cluster).not.toContain('minted');
    // a passphrase: plain spaces between its words are typed, and kept
    const passphrase = 'correct horse battery staple and thirty two bytes';
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: passphrase }).auth.jwtSecret).toBe(passphrase);
    // white space only is blank, as for every variable: unset, so production asks for one
    expect(message('\uFEFF\u00A0'.repeat(20))).toMatch(/^invalid environment: JWT_SECRET: must be set in production \(it is empty\)/);
    // 32 bytes as HS256 takes the key (UTF-8), not 32 UTF-16 code units
    expect(message('é'.repeat(15))).toMatch(/JWT_SECRET: expected your project's JWT secret, 32 characters at least \(bytes in UTF-8\)/);
    expect(message('é'.repeat(16))).toBe('');
    // what Supabase gives (its legacy JWT secret: 40 characters of base64), what openssl makes, the CLI's own length
    for (const secret of ['Zq3mPZ4r8yD6kT1vW0xN2bH7cJ5fL9gA+sE/uR=Q', 'k7B1f0zJ2QXlq9Yv8w3rT6mN5pC4sD0eF1gH2iJ3kL4mN5oP6qR7sT8uV9wX0yZ+', 'your-super-secret-jwt-token-with-at-least-32-characters-long']) {
      expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: secret }).auth.jwtSecret).toBe(secret);
    }
  });

  it('never shows a password or a secret', () => {
    const message = (env: Record<string, string | undefined>) => { try { loadConfig(env); return ''; } catch (err) { return (err as Error).message; } };
    expect(message({ DATABASE_URL: 'postgres://potentia_runtime:hunter2-secret@db:port/potentia' })).toContain('(got "postgres://potentia_runtime:***@db:port/potentia")');
    expect(message({ JWT_SECRET: 'hunter2-secret' })).toMatch(/JWT_SECRET: expected your project's JWT secret, 32 characters at least \(bytes in UTF-8\): make one with `openssl rand -base64 48` \(got 14 characters\)/);
    expect(message({ DATABASE_URL: 'u:hunter2-secret@db/p' })).toContain('(got 21 characters, no scheme://)');
    for (const env of [{ DATABASE_URL: 'postgres://u:hunter2-secret@db:port/p' }, { DATABASE_URL: 'u:hunter2-secret@db/p' }, { JWT_SECRET: 'hunter2-secret' },
      { INTERNAL_TOKEN: 'hunter2-secret' }]) {
      expect(message(env)).not.toContain('hunter2');
    }
  });

  it('outside the schema too: storage, AUTH_EMAIL_CONFIRM, POTENTIA_ROLE', () => {
    expect(() => storageConfig({ S3_BUCKET: 'files', S3_ENDPOINT: 'minio:9000' }))
      .toThrow(/^invalid storage environment: S3_ENDPOINT: expected an http\(s\):\/\/ URL, e.g. https:\/\/<ref>\.supabase\.co\/storage\/v1\/s3 \(got "minio:9000"\)/);
    expect(() => storageConfig({ S3_BUCKET: 'files', LOCAL_S3_PORT: 'auto' })).toThrow(/LOCAL_S3_PORT: expected a whole number from 0 to 65535 \(got "auto"\)/);
    expect(() => storageConfig({ S3_BUCKET: 'files', S3_FORCE_PATH_STYLE: 'yes' })).toThrow(/S3_FORCE_PATH_STYLE: expected 1 or true/);
    expect(() => gotrueSettings({ AUTH_EMAIL_CONFIRM: 'yes' })).toThrow(/^invalid environment: AUTH_EMAIL_CONFIRM: expected true or 1 \(confirm\), false or 0 \(do not\) \(got "yes"\)/);
    expect(() => resolveRole([], { POTENTIA_ROLE: 'router' })).toThrow(/^unknown role router \(POTENTIA_ROLE\): expected one of all, api, gateway, worker\n/);
  });
});
