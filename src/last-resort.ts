// The process-wide handler of rejections nobody handled, for each entry point (npm start / serve,
// npm run worker, and each Supabase edge function). Last resort only: every known fault is handled
// where it happens. Node 20 ends the process on an unhandled rejection, and Deno (the Supabase Edge
// Runtime) ends the isolate, with every request it is serving; a rejection nobody handled is a bug
// to report, not a reason to drop every socket, job and request the process serves.
import process from 'node:process';

let installed = false;

/**
 * Logs an unhandled rejection as a bug and keeps the process (or the Deno isolate) running.
 * Installed once however often it is called. Under Deno, node:process's `unhandledRejection`
 * listeners are called from the runtime's `unhandledrejection` event, which a listener cancels.
 */
export function keepRunningOnUnhandledRejection(): void {
  if (installed) return;
  installed = true;
  process.on('unhandledRejection', (err) => {
    console.error('BUG: unhandled rejection (the process keeps serving; please report this):', err);
  });
}
