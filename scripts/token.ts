// Dev only: mint an access token for a user of the dev database, creating the user first when
// --password is given and the address is new (the same SQL as POST /auth/v1/signup).
//   npx tsx scripts/token.ts [--email demo@potentia.local] [--password P] [--scope "canvas:<id>:write"] [--ttl 86400]
//                            [--database-url URL]        (default: DATABASE_URL, else the dev database)
import { parseCommandLine, wholeNumber } from './lib/command-line.ts';
import postgres from 'postgres';
import { loadConfig, type Config } from '../src/config.ts';
import { DEMO, devToken } from '../src/dev.ts';

const USAGE = `Mints a dev access token (printed on stdout) for a user of the dev database.

  npx tsx scripts/token.ts [options]

  --email E          the user (default ${DEMO.email}, which \`npm start\` seeds)
  --password P       check P as the user's password; when no user has address E, create one with
                     it first (confirmed, as POST /auth/v1/signup does locally); a user without a
                     password gets P as its password (the seeded demo user's is demo-password)
  --scope S          narrow the token to some canvases: space-separated words canvas:<id>:write
                     (implies read), canvas:<id>:read, canvas:*:write or canvas:*:read
  --ttl SECONDS      lifetime of the token (default 86400)
  --database-url U   the database (default: DATABASE_URL, else postgres://postgres:postgres@127.0.0.1:5432/potentia)
  --help             this text

The token carries no session: sign in through supabase-js (supabase.auth.signInWithPassword) or
POST /auth/v1/token?grant_type=password for a session with a refresh token.`;

function fail(message: string): never {
  console.error(message);
  process.exit(1);
}

const { values, number } = parseCommandLine({ options: {
  email: { type: 'string' }, password: { type: 'string' }, scope: { type: 'string' }, ttl: { type: 'string' },
  'database-url': { type: 'string' },
} }, USAGE);

let config: Config;
try {
  config = loadConfig(values['database-url'] ? { ...process.env, DATABASE_URL: values['database-url'] } : process.env);
} catch (err) {
  fail(`${(err as Error).message}\nFix the variable (or pass --database-url postgres://user:pass@host:5432/db).`);
}
if (config.env === 'production') fail('refusing to mint tokens with NODE_ENV=production: tokens there come from Supabase Auth');
const ttl = number('ttl', wholeNumber(1), 86400);

const scope = values.scope === undefined ? undefined : scopeClaim(values.scope);

/**
 * The scope claim as internal.scope_allows reads it (sql/auth/permissions.sql): words
 * canvas:<id>:read|write or canvas:*:read|write, the id in canonical form (lower case), as the
 * database compares it. Anything else would mint a token that silently allows nothing.
 */
function scopeClaim(text: string): string {
  const words = text.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) fail('--scope is empty: pass words like canvas:<id>:write, or omit --scope for the user\'s full rights');
  return words.map((word) => {
    const m = /^canvas:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\*):(read|write)$/.exec(word);
    if (!m) fail(`--scope: ${JSON.stringify(word)} is not canvas:<id>:read, canvas:<id>:write, canvas:*:read or canvas:*:write (<id> a canvas uuid)`);
    return `canvas:${m[1]!.toLowerCase()}:${m[2]}`;
  }).join(' ');
}

const email = (values.email ?? DEMO.email).trim().toLowerCase();
const url = new URL(config.databaseUrl);
const where = `database ${url.pathname.slice(1)} on ${url.hostname}:${url.port || 5432}`;
// the URL without its password, for messages
const shownUrl = `${url.protocol}//${url.username ? `${url.username}@` : ''}${url.host}${url.pathname}`;
const migrate = `DATABASE_URL=${shownUrl} npm run db:migrate`;
const sql = postgres(config.databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
try {
  const [existing] = await sql`select id, encrypted_password is not null as has_password from auth.users where lower(email) = ${email}`;
  let userId = existing?.id as string | undefined;
  if (values.password !== undefined) {
    // the functions of sql/auth/password.sql; no refresh hash: no session is started. A user made by
    // SQL (the seed's demo user) has no password yet: it gets this one, and its address counts as confirmed.
    const [row] = !existing
      ? await sql`select internal.password_sign_up(${email}, ${values.password}, '{}'::jsonb, true, '', null, 0) as r`
      : existing.has_password
        ? await sql`select internal.password_sign_in(${email}, ${values.password}, '', null, 0) as r`
        : await sql.begin(async (tx) => {
          const rows = await tx`select internal.auth_update_user(${existing.id}, null, null, ${values.password!}) as r`;
          if (!rows[0]!.r.error) await tx`update auth.users set email_confirmed_at = coalesce(email_confirmed_at, now()) where id = ${existing.id}`;
          return rows;
        });
    const r = row!.r as { error?: string; message?: string; user?: { id: string } };
    if (r.error === 'invalid_credentials') {
      fail(`${email} exists and that is not its password: pass its password, or omit --password to mint a token without checking it`);
    }
    if (r.error === 'email_not_confirmed') {
      fail(`${email} has not confirmed its address: psql "${shownUrl}" -c "update auth.users set email_confirmed_at = now() where email = '${email}'"`);
    }
    if (r.error) fail(`${r.error}: ${r.message}`);
    if (!existing) console.error(`created user ${email} (${r.user!.id}) in ${where}`);
    else if (!existing.has_password) console.error(`set the password of ${email} (it had none) in ${where}`);
    userId = r.user!.id;
  }
  if (!userId) {
    fail(`no user ${email} in ${where}. Create it: npx tsx scripts/token.ts --email ${email} --password '<at least 6 characters>'` +
      (email === DEMO.email ? ' (or run npm start once: it seeds this user)' : ''));
  }
  console.log(await devToken(config, { sub: userId, email, scope }, ttl));
} catch (err) {
  const e = err as { code?: string; message?: string; hint?: string; detail?: string };
  if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'CONNECT_TIMEOUT') {
    fail(`cannot reach PostgreSQL for ${where} (${e.code}): start it (npm start sets it up), or point DATABASE_URL / --database-url at a running server`);
  }
  if (e.code === '3D000') fail(`${where} does not exist: run npm start once (it creates and migrates it), or create it and run ${migrate}`);
  if (e.code === '28P01' || e.code === '28000') fail(`PostgreSQL refused the login for ${where}: fix the user or password in DATABASE_URL / --database-url`);
  if (e.code === '42P01' || e.code === '42703' || e.code === '42883' || e.code === '3F000') {
    fail(`${where} is not migrated (${e.message}): run ${migrate}`);
  }
  if (e.code === 'PX429') fail(`too many sign-in attempts for ${email}: ${e.message}`);
  throw err;
} finally {
  await sql.end();
}
