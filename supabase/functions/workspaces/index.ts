// Supabase edge function `workspaces`: the same Hono routes the local server mounts at /api/v1/workspaces.
import process from 'node:process';
import { createEdgeApp } from '../../../src/http/edge.ts';

const app = createEdgeApp('workspaces', process.env);
Deno.serve(app.fetch);
