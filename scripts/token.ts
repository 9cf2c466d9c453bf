// Dev only: mint an access token for a user of the dev database.
//   npx tsx scripts/token.ts [--email demo@potentia.local] [--scope "canvas:<id>:write"] [--ttl 86400]
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { loadConfig } from '../src/config.ts';
import { DEMO, devToken } from '../src/dev.ts';

const { values } = parseArgs({ options: { email: { type: 'string' }, scope: { type: 'string' }, ttl: { type: 'string' } } });
const config = loadConfig();
const email = values.email ?? DEMO.email;
const sql = postgres(config.databaseUrl, { max: 1, onnotice: () => {} });
try {
  const [user] = await sql`select id from auth.users where email = ${email}`;
  if (!user) {
    console.error(`no user ${email} in ${new URL(config.databaseUrl).pathname.slice(1)}: run npm start once (it seeds ${DEMO.email})`);
    process.exitCode = 1;
  } else {
    console.log(await devToken(config, { sub: user.id, email, scope: values.scope }, Number(values.ttl ?? 86400)));
  }
} finally {
  await sql.end();
}
