import type { Sql } from 'postgres';
import type { TokenClaims } from '../auth/jwt.ts';
import { runAgainOnLostConnection } from '../db/faults.ts';

/** A socket's verified token (src/auth/jwt.ts): a user's token or an API key. */
export type SocketClaims = TokenClaims;

/**
 * Channel authorization the way Supabase Realtime does it: inside a transaction that is always
 * rolled back, set `role`, `request.jwt.claims` and `realtime.topic` locally, then probe
 * realtime.messages under RLS — a SELECT decides whether the caller may join (read) the topic, an
 * INSERT whether it may send (write). The policies in sql/realtime/policies.sql decide; this file
 * only asks.
 */

const ROLES = new Set(['anon', 'authenticated', 'service_role']);
const ROLLBACK = Symbol('rollback');

export async function mayAccessTopic(sql: Sql, claims: SocketClaims, topic: string, access: 'read' | 'write', extension: 'broadcast' | 'presence' = 'broadcast'): Promise<boolean> {
  if (claims.role === 'service_role') return true;
  if (!ROLES.has(claims.role)) return false;
  // the probe is always rolled back: one whose connection was lost (a backend terminated, a
  // pooler's connection dropped) is run again, not answered as unavailable; one whose BEGIN was not
  // answered (its connection dead when drawn) is not counted as a try
  const begun = { value: false };
  return runAgainOnLostConnection(() => probe(sql, claims, topic, access, extension, begun), { answered: () => begun.value, pooled: sql.options.max });
}

/** One probe transaction (mayAccessTopic): whether RLS lets the caller read or write the topic. */
async function probe(sql: Sql, claims: SocketClaims, topic: string, access: 'read' | 'write', extension: 'broadcast' | 'presence', begun: { value: boolean }): Promise<boolean> {
  let allowed = false;
  begun.value = false;
  try {
    await sql.begin(async (tx) => {
      begun.value = true;
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                      set_config('realtime.topic', ${topic}, true),
                      set_config('statement_timeout', '5000', true)`;
      if (access === 'read') {
        // a row of this topic, written by the session's login role (no policy applies to it) ...
        await tx`insert into realtime.messages (topic, extension, event, payload, private)
                 values (${topic}, ${extension}, 'authorization_probe', '{}'::jsonb, true)`;
        // ... then read back as the caller: visible only if the select policy admits the caller
        await tx`select set_config('role', ${claims.role}, true)`;
        try {
          const rows = await tx`select 1 from realtime.messages
                                where topic = ${topic} and event = 'authorization_probe' limit 1`;
          allowed = rows.length > 0;
        } catch (err) {
          // a role without select on realtime.messages at all (anon) is refused, like one RLS hides rows from
          if ((err as { code?: string }).code !== '42501') throw err;
        }
      } else {
        await tx`select set_config('role', ${claims.role}, true)`;
        try {
          await tx`insert into realtime.messages (topic, extension, event, payload, private)
                   values (${topic}, ${extension}, 'authorization_probe', '{}'::jsonb, true)`;
          allowed = true;
        } catch (err) {
          if ((err as { code?: string }).code !== '42501') throw err; // RLS / privilege refusal
        }
      }
      throw ROLLBACK; // nothing of the probe survives
    });
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
  return allowed;
}
