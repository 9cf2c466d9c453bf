// Supabase edge function `auth`: the same Hono routes the local server mounts at /api/v1/auth.
import process from 'node:process';
import { createEdgeApp } from '../../../src/http/edge.ts';

const app = createEdgeApp('auth', process.env);
Deno.serve(app.fetch);
