import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';

/**
 * Real @supabase/realtime-js clients for tests: `connect()` one to a Potentia server (its
 * `http://` base URL), `disconnectAll()` in afterAll.
 */
export function realtimeClients(opts: { timeoutMs?: number } = {}) {
  const clients: RealtimeClient[] = [];
  return {
    connect(baseUrl: string, apikey: string, vsn: string): RealtimeClient {
      const client = new RealtimeClient(`${baseUrl.replace(/^http/, 'ws')}/realtime/v1`, {
        params: { apikey }, transport: WebSocket as any, vsn, heartbeatIntervalMs: 5000, timeout: opts.timeoutMs ?? 5000,
      });
      clients.push(client);
      return client;
    },
    async disconnectAll(): Promise<void> {
      await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
    },
  };
}

/** Subscribes and resolves with the first status other than CLOSED (SUBSCRIBED, CHANNEL_ERROR, TIMED_OUT). */
export function subscribed(channel: RealtimeChannel): Promise<{ status: string; err?: Error }> {
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status !== 'CLOSED') resolve({ status, err });
    });
  });
}
