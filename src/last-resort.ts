// The process-wide handler of rejections nobody handled, for each entry point (npm start / serve,
// npm run worker). Last resort only: every known fault is handled where it happens. Node 20 ends
// the process on an unhandled rejection, and a rejection nobody handled is a bug to report, not a
// reason to drop every socket and job the process serves.

/** Logs an unhandled rejection as a bug and keeps the process running. */
export function keepRunningOnUnhandledRejection(): void {
  process.on('unhandledRejection', (err) => {
    console.error('BUG: unhandled rejection (the process keeps serving; please report this):', err);
  });
}
