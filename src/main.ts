// Entry point of `npm start` (after scripts/start has run setup, migrations and the seed).
import { loadConfig } from './config.ts';
import { apiKeys, DEMO, devToken } from './dev.ts';
import { startServer } from './server.ts';

const config = loadConfig();
// Last resort only: every known fault is handled where it happens. A rejection nobody handled is
// a bug to report, not a reason to drop every socket this process serves.
process.on('unhandledRejection', (err) => {
  console.error('BUG: unhandled rejection (the process keeps serving; please report this):', err);
});
// the background-job worker runs in this process unless WORKER_MODE is external (`npm run worker`) or off
const server = await startServer(config, { worker: config.worker.mode === 'inprocess' }).catch((err: NodeJS.ErrnoException) => {
  console.error(err.code === 'EADDRINUSE'
    ? `port ${config.port} on ${config.host} is in use (another npm start?): stop that process or set PORT to a free port`
    : `could not start: ${err.message}`);
  process.exit(1);
});
const token = config.env === 'production' ? undefined : await devToken(config, { sub: DEMO.userId, email: DEMO.email });
// the local API keys, as `supabase start` prints them (createClient(url, anonKey) signs in through /auth/v1)
const keys = config.env === 'production' ? undefined : await apiKeys(config);
console.log(`Potentia is running
  health    ${server.url}/health
  ready     ${server.url}/ready
  API       ${server.url}/api/v1/canvas   (also /functions/v1/canvas)
  auth      ${server.url}/auth/v1   (email + password: signup, token, logout, user)
  OpenAPI   ${server.url}/api/v1/openapi.json
  realtime  ${server.gateway ? `${server.url.replace(/^http/, 'ws')}/realtime/v1/websocket (realtime-js), ${server.url.replace(/^http/, 'ws')}/ws/canvas/{id} (H1)` : 'not started (see the log)'}
  metrics   ${server.url}/metrics   (loopback or INTERNAL_TOKEN)
  profile   ${config.profile}${config.profile === 'development' ? ' (endpoint rate limits relaxed: docs/limits.md; POTENTIA_PROFILE=standard for the real ones)' : ''}
  worker    ${server.worker ? `in-process (${server.worker.workerId}, provider ${server.worker.provider.model})` : `WORKER_MODE=${config.worker.mode}`}${keys ? `
API keys (createClient('${server.url}', anon key)):
  anon key          ${keys.anon}
  service_role key  ${keys.service_role}` : ''}${token ? `
Demo canvas ${DEMO.canvasId}; a 24 h token for ${DEMO.email}:
  export TOKEN=${token}
  curl -H "Authorization: Bearer $TOKEN" ${server.url}/api/v1/canvas/${DEMO.canvasId}` : ''}
Stop with Ctrl+C (or kill ${process.pid}).`);

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
