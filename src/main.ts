// Entry point of `npm start` (after scripts/start has run setup and migrations).
import { loadConfig } from './config.ts';
import { startServer } from './server.ts';

const config = loadConfig();
const server = await startServer(config);
console.log(`Potentia is running
  health   ${server.url}/health
  ready    ${server.url}/ready
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
