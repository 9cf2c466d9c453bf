// Entry point of `npm start` (after scripts/start has run setup, migrations and the seed) and of
// `npm run serve -- --role all|api|gateway|worker` (src/roles.ts: what each role runs).
import { loadConfigOrExit, realtimeConfigProblem } from './config.ts';
import { assertMigrated } from './db/migrated.ts';
import { keepRunningOnUnhandledRejection } from './last-resort.ts';
import { apiKeys, DEMO, devToken } from './dev.ts';
import { resolveRole, ROLE_USAGE, startRole, type Role } from './roles.ts';
import { listenFailureAdvice, startFailureAdvice, unknownMigrationsWarnings } from './start-failure.ts';

// --help (-h) as every script answers it (scripts/lib/command-line.ts): the usage, exit 0
if (process.argv.slice(2).some((a) => a === '--help' || a === '-h')) {
  console.log(ROLE_USAGE);
  process.exit(0);
}
let role: Role;
try {
  role = resolveRole(process.argv.slice(2));
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
const config = loadConfigOrExit();
// the realtime gateway's cluster needs a key its gateways share (src/realtime/cluster-key.ts): without one, exit 2 as for any bad environment
const realtimeProblem = role === 'all' || role === 'gateway' ? realtimeConfigProblem(config) : undefined;
if (realtimeProblem) {
  console.error(realtimeProblem);
  process.exit(2);
}
keepRunningOnUnhandledRejection();
// role all runs the background-job worker in this process unless WORKER_MODE is external (`npm run worker`) or off
// a database with migrations this code lacks (a newer release's, or files deleted) is warned of, not refused
const unknown = (found: { newer: string[]; removed: string[] }) => unknownMigrationsWarnings(found, config).forEach((w) => console.warn(w));
const server = await assertMigrated(config.databaseUrl, { unknown }).then(() => startRole(config, role)).catch((err: NodeJS.ErrnoException) => {
  console.error(listenFailureAdvice(err, config)
    ?? [`could not start (role ${role}): ${err.message}`, startFailureAdvice(err, config)].filter(Boolean).join('\n  '));
  process.exit(1);
});
const ws = server.url.replace(/^http/, 'ws');
const serves = { api: role === 'all' || role === 'api', realtime: role === 'all' || role === 'gateway' };
const demoToken = config.env === 'production' || !serves.api ? undefined : await devToken(config, { sub: DEMO.userId, email: DEMO.email });
// shown only where the demo canvas answers: the seed ran (npm start seeds; npm run serve on another database may not have)
const token = demoToken && await fetch(`${server.url}/api/v1/canvas/${DEMO.canvasId}`, { headers: { authorization: `Bearer ${demoToken}` } })
  .then((r) => (void r.body?.cancel(), r.ok), () => false) ? demoToken : undefined;
// the local API keys, as `supabase start` prints them (supabase-js createClient(url, anonKey) signs in through /auth/v1)
const keys = config.env === 'production' || role === 'worker' ? undefined : await apiKeys(config);
const lines = [
  `Potentia is running (role ${role}, pid ${process.pid})`,
  `  health    ${server.url}/health`,
  `  ready     ${server.url}/ready`,
  ...(serves.api ? [
    `  API       ${server.url}/api/v1/canvas   (also /functions/v1/canvas)`,
    `  auth      ${server.url}/auth/v1   (email + password: signup, token, logout, user)`,
    `  OpenAPI   ${server.url}/api/v1/openapi.json   (reference: ${server.url}/docs/api)`,
    `  demo app  ${server.url}/`,
  ] : []),
  ...(serves.realtime ? [
    `  realtime  ${server.gateway ? `${ws}/realtime/v1/websocket (realtime-js), ${ws}/ws/canvas/{id} (H1)` : 'not started: tried again in the background (the log says why; /ready is 503 until it serves)'}`,
  ] : []),
  `  metrics   ${server.url}/metrics   (${config.internalToken ? 'Authorization: Bearer $INTERNAL_TOKEN, loopback included' : 'loopback only: INTERNAL_TOKEN unset'})`,
  ...(serves.api ? [
    `  profile   ${config.profile}${config.profile === 'development' ? ' (endpoint rate limits relaxed: docs/limits.md; POTENTIA_PROFILE=standard for the real ones)' : ''}`,
  ] : []),
  `  worker    ${server.worker ? `${role === 'worker' ? 'this process' : 'in-process'} (${server.worker.workerId}, provider ${server.worker.provider.model})`
    : role === 'all' ? `WORKER_MODE=${config.worker.mode}` : `not in this process (role ${role})`}`,
];
// `npm run worker`'s announcement, which operators and tests look for
if (server.worker && role === 'worker') lines.push(`potentia worker ${server.worker.workerId} running (pid ${process.pid}, concurrency ${config.worker.concurrency}, provider ${server.worker.provider.model})`);
// Node 20 has no global WebSocket, which supabase-js's createClient needs: the banner shows the option
// createClient(url, …) needs auth, functions and realtime at one URL: role all only (api and gateway split them)
if (keys) lines.push(role === 'all'
  ? `API keys (supabase-js: createClient('${server.url}', anonKey, { realtime: { transport: ws as never } }), ws = import ws from 'ws', needed on Node 20 only):`
  : `API keys (supabase-js needs the API and realtime at one URL: put them behind one proxy, docs/self-hosting.md):`,
  `  anon key          ${keys.anon}`, `  service_role key  ${keys.service_role}`);
if (token) lines.push(`Demo canvas ${DEMO.canvasId}; a 24 h token for ${DEMO.email}:`, `  export TOKEN=${token}`,
  `  curl -H "Authorization: Bearer $TOKEN" ${server.url}/api/v1/canvas/${DEMO.canvasId}`);
// the next step, for someone who came for their own app: the quick start of packages/client/README.md
// with this server's key (and its URL, when it is not the quick start's default)
if (keys && role === 'all') {
  const urlVar = server.url === 'http://127.0.0.1:54321' ? '' : `POTENTIA_URL=${server.url} `;
  lines.push(`Next: open the demo app (${server.url}/), or write your own app on @potentia/client:`,
    `  save the Quick start of packages/client/README.md as quickstart.ts at the repository root, then run`,
    `  ${urlVar}ANON_KEY=${keys.anon} npx tsx quickstart.ts`);
}
lines.push(`Stop with Ctrl+C (or kill ${process.pid}).`);
console.log(lines.join('\n'));

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping…`);
    await server.stop();
    process.exit(0);
  });
}
