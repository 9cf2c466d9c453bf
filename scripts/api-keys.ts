// npx tsx scripts/api-keys.ts [--years 10]
// Mints the project's API keys for a self-hosted deployment: the `anon` and `service_role` JWTs
// (HS256, signed with JWT_SECRET from the environment, no `sub`), what Supabase shows under
// Project Settings → API. Clients send the anon key (createClient(url, anonKey): /auth/v1 and
// realtime need one); the service_role key is for trusted servers only. On Supabase, use the
// project's own keys instead. docs/self-hosting.md, "Installing on a host".
import { decimalNumber, parseCommandLine } from './lib/command-line.ts';
import { SignJWT } from 'jose';
import { DEV_JWT_SECRET, EnvSchema } from '../src/config.ts';

const USAGE = 'usage: JWT_SECRET=... npx tsx scripts/api-keys.ts [--years N]   prints anon=<jwt> and service_role=<jwt>';
const { number } = parseCommandLine({ options: { years: { type: 'string', default: '10' } } }, USAGE);
const years = number('years', decimalNumber(0, undefined, { above: true }));
const secret = process.env.JWT_SECRET;
// the servers' own rule (src/config.ts): 32 bytes at least, nothing invisible in it
const refused = secret?.trim() ? EnvSchema.shape.JWT_SECRET.unwrap().safeParse(secret).error : undefined;
if (!secret?.trim() || refused) {
  console.error(`JWT_SECRET: ${refused ? refused.issues[0]!.message : 'must be set'}: the secret your Potentia processes verify tokens with`
    + (refused ? '' : ' (make one with `openssl rand -base64 48` and put it in their environment, e.g. /etc/potentia/potentia.env: '
      + 'docs/self-hosting.md, "Installing on a host"). The local server signs with Supabase\'s development secret: npm start prints its keys'));
  process.exit(2);
}
if (secret === DEV_JWT_SECRET) console.error('warning: JWT_SECRET is the published development secret: anyone can mint these keys');
const key = new TextEncoder().encode(secret);
const now = Math.floor(Date.now() / 1000);
for (const role of ['anon', 'service_role'] as const) {
  const jwt = await new SignJWT({ role, iss: 'potentia' }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt(now).setExpirationTime(now + Math.round(years * 365.25 * 86400)).sign(key);
  console.log(`${role}=${jwt}`);
}
