import { createClient, FunctionsFetchError, FunctionsHttpError, type Session, type SupabaseClient, type User } from '@supabase/supabase-js';
import { Canvas, type CanvasDeps } from './canvas.ts';
import type { WebSocketConstructor } from './canvas-sync.ts';
import { AccessLostError, PotentiaError, RateLimitedError } from './errors.ts';

/**
 * createPotentiaClient: one object for a Potentia app, built on supabase-js. Sign-in is Supabase
 * Auth (`/auth/v1`: the local server's, or your Supabase project's); workspaces and canvases are
 * the Potentia HTTP API called through `supabase.functions.invoke` (`/functions/v1/...`, with the
 * session's access token); a canvas is live over H1 (`/ws/canvas/{id}`), given the session's
 * access token on every (re)connect, so a refreshed token is used from the next reconnect on.
 */

/** Options of createPotentiaClient. */
export type PotentiaClientOptions = {
  /** The server's base URL, e.g. `http://127.0.0.1:54321` (what `npm start` prints) or your Supabase project URL. */
  url: string;
  /** The project's anon key (`npm start` prints the local one). */
  anonKey: string;
  /**
   * The WebSocket class for the canvas socket and supabase-js realtime. Default: globalThis.WebSocket
   * (browsers, Deno, Node 22+). Node 20 has none: pass the `ws` package's default export.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * supabase-js auth settings. Default: the session is kept (localStorage in browsers, memory
   * elsewhere) and refreshed before it expires.
   */
  auth?: { persistSession?: boolean; autoRefreshToken?: boolean; storageKey?: string };
  /** Canvas socket timing (tests, slow networks): see CanvasSyncOptions. */
  canvas?: CanvasDeps['sync'];
};

/** The signed-in user. */
export type PotentiaUser = { id: string; email: string | null };

/** A role in a workspace or on a canvas. */
export type Role = 'owner' | 'admin' | 'editor' | 'viewer';

/** A workspace and the caller's role in it. */
export type Workspace = { workspace_id: string; name: string; role: Role; created_by: string | null; created_at: string };

/** A member of a workspace. */
export type WorkspaceMember = { user_id: string; email: string | null; role: Role; joined_at: string };

/** A pending invitation: the address becomes a member with `role` when it signs up. */
export type WorkspaceInvite = { invite_id: string; workspace_id: string; email: string; role: Role; invited_by: string | null; created_at: string };

/** addMember's answer: an existing user became a member, or an unknown address got an invite. */
export type AddMemberResult = { kind: 'member'; member: WorkspaceMember } | { kind: 'invite'; invite: WorkspaceInvite };

/** A canvas and the caller's role on it. */
export type CanvasInfo = {
  canvas_id: string; workspace_id: string; title: string; settings: Record<string, unknown>; version: number;
  created_by: string | null; created_at: string; updated_at: string; role: Role;
};

/** The auth part of a PotentiaClient (Supabase Auth, email and password). */
export type PotentiaAuth = {
  /**
   * Creates an account and signs in (unless the server wants the address confirmed first: then
   * user() stays null). Rejects with PotentiaError: `user_already_exists`, `weak_password` (field
   * `password`), `email_address_invalid` (field `email`), ...; RateLimitedError.
   */
  signUp(email: string, password: string): Promise<PotentiaUser>;
  /** Signs in. Rejects with PotentiaError `invalid_credentials`, ...; RateLimitedError. */
  signIn(email: string, password: string): Promise<PotentiaUser>;
  /** Signs out (ends the session on the server); open canvases close (their pending changes reject with `unauthorized`). */
  signOut(): Promise<void>;
  /** The signed-in user, or null. */
  user(): PotentiaUser | null;
  /** The current access token (refreshed if it expired), or null when signed out. */
  accessToken(): Promise<string | null>;
  /** Calls `listener` when the user signs in or out (and with the restored user at start-up). Returns the unsubscribe function. */
  onChange(listener: (user: PotentiaUser | null) => void): () => void;
};

/** Workspaces of the signed-in user. Every call rejects with PotentiaError (`unauthorized` when signed out), RateLimitedError. */
export type PotentiaWorkspaces = {
  /** The user's workspaces, with their role. */
  list(): Promise<Workspace[]>;
  /** Creates a workspace (1–200 characters); the user becomes its owner. */
  create(name: string): Promise<Workspace>;
  /** Its members (any member may list). */
  members(workspaceId: string): Promise<WorkspaceMember[]>;
  /**
   * Adds a user by email with `role` (owners and admins; only an owner adds an owner), or invites an
   * address without an account. PotentiaError `conflict` (field `email`) when already a member.
   */
  addMember(workspaceId: string, email: string, role: Role): Promise<AddMemberResult>;
};

/** Canvases of the signed-in user. Every call rejects with PotentiaError (`unauthorized` when signed out), RateLimitedError. */
export type PotentiaCanvases = {
  /** Every canvas the user can see, with their role, newest change first. */
  list(): Promise<CanvasInfo[]>;
  /** Creates a canvas in a workspace (editors and up); resolves with its id. */
  create(workspaceId: string, title: string): Promise<{ canvas_id: string }>;
};

/** What createPotentiaClient returns. */
export type PotentiaClient = {
  /** The supabase-js client underneath (auth, functions, realtime channels). */
  readonly supabase: SupabaseClient;
  readonly auth: PotentiaAuth;
  readonly workspaces: PotentiaWorkspaces;
  readonly canvases: PotentiaCanvases;
  /** The live canvas `canvasId` (not connected until its connect()); the same object until it is closed. */
  canvas(canvasId: string): Canvas;
};

const toUser = (u: User | null | undefined): PotentiaUser | null => (u ? { id: u.id, email: u.email ?? null } : null);

/** Field names of sign-in refusals, so that forms can point at the input. */
const AUTH_FIELDS: Record<string, string> = { weak_password: 'password', email_address_invalid: 'email', email_exists: 'email', user_already_exists: 'email' };

function authError(error: { message: string; status?: number | undefined; code?: string | undefined }): PotentiaError {
  if (error.status === 429 || error.code === 'over_request_rate_limit') return new RateLimitedError(error.message, 60_000, 429);
  const code = error.code ?? (error.status === 0 || error.status === undefined ? 'network' : 'auth_error');
  return new PotentiaError(code, error.message, AUTH_FIELDS[code], error.status);
}

/** The Potentia error of a functions.invoke failure (the body is `{error: {code, message, field?}}`). */
async function invokeError(error: unknown): Promise<PotentiaError> {
  if (error instanceof FunctionsHttpError) {
    const response = error.context as Response;
    let body: { error?: { code?: unknown; message?: unknown; field?: unknown } } = {};
    try {
      body = (await response.json()) as typeof body;
    } catch {
      // not JSON (a proxy's page): the status says enough
    }
    const e = body.error ?? {};
    const message = typeof e.message === 'string' ? e.message : `HTTP ${response.status}`;
    if (response.status === 429) {
      const seconds = Number(response.headers.get('retry-after'));
      return new RateLimitedError(message, Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : 60_000);
    }
    const code = typeof e.code === 'string' ? e.code : response.status === 401 ? 'unauthorized' : 'internal';
    return new PotentiaError(code, message, typeof e.field === 'string' ? e.field : undefined, response.status);
  }
  if (error instanceof FunctionsFetchError) return new PotentiaError('network', `the server could not be reached: ${String(error.context?.message ?? error.message)}`);
  return new PotentiaError('unavailable', error instanceof Error ? error.message : String(error));
}

/**
 * Makes a Potentia client. Nothing is sent until a call. Example:
 * `const potentia = createPotentiaClient({ url: 'http://127.0.0.1:54321', anonKey, WebSocket: ws })`.
 */
export function createPotentiaClient(options: PotentiaClientOptions): PotentiaClient {
  const url = options.url.replace(/\/+$/, '');
  const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  const supabase = createClient(url, options.anonKey, {
    auth: { persistSession: options.auth?.persistSession ?? true, autoRefreshToken: options.auth?.autoRefreshToken ?? true,
      detectSessionInUrl: false, ...(options.auth?.storageKey ? { storageKey: options.auth.storageKey } : {}) },
    ...(options.WebSocket ? { realtime: { transport: options.WebSocket as never } } : {}),
  });

  let user: PotentiaUser | null = null;
  const userListeners = new Set<(u: PotentiaUser | null) => void>();
  const canvases = new Map<string, Canvas>();
  const setUser = (next: PotentiaUser | null) => {
    const prev = user;
    user = next;
    if (next?.id === prev?.id) return;
    // a canvas acts with the session's token: another user's (or none) must not take it over
    if (prev) for (const c of [...canvases.values()]) c.end(new PotentiaError('unauthorized', next ? 'signed in as another user' : 'signed out'));
    for (const l of [...userListeners]) {
      try {
        l(next);
      } catch (err) {
        console.error('@potentia/client: auth listener:', err);
      }
    }
  };
  supabase.auth.onAuthStateChange((_event, session: Session | null) => setUser(toUser(session?.user)));

  const call = async <T>(path: string, method: 'GET' | 'POST', body?: Record<string, unknown>): Promise<T> => {
    let result: Awaited<ReturnType<typeof supabase.functions.invoke>>;
    try {
      result = await supabase.functions.invoke(path, body ? { method, body } : { method });
    } catch (err) {
      throw await invokeError(err);
    }
    if (result.error) throw await invokeError(result.error);
    return result.data as T;
  };

  const accessToken = async (): Promise<string | null> => {
    const { data } = await supabase.auth.getSession();
    return data.session?.access_token ?? null;
  };

  const auth: PotentiaAuth = {
    async signUp(email, password) {
      const { data, error } = await supabase.auth.signUp({ email, password });
      if (error) throw authError(error);
      if (data.session) setUser(toUser(data.session.user));
      const u = toUser(data.user);
      if (!u) throw new PotentiaError('auth_error', 'sign-up answered without a user');
      return u;
    },
    async signIn(email, password) {
      const { data, error } = await supabase.auth.signInWithPassword({ email, password });
      if (error) throw authError(error);
      setUser(toUser(data.user));
      return toUser(data.user)!;
    },
    async signOut() {
      const { error } = await supabase.auth.signOut();
      setUser(null);
      if (error) throw authError(error);
    },
    user: () => user,
    accessToken,
    onChange(listener) {
      userListeners.add(listener);
      return () => void userListeners.delete(listener);
    },
  };

  const workspaces: PotentiaWorkspaces = {
    list: async () => (await call<{ workspaces: Workspace[] }>('workspaces', 'GET')).workspaces,
    create: (name) => call<Workspace>('workspaces', 'POST', { name }),
    members: async (id) => (await call<{ members: WorkspaceMember[] }>(`workspaces/${encodeURIComponent(id)}/members`, 'GET')).members,
    addMember: (id, email, role) => call<AddMemberResult>(`workspaces/${encodeURIComponent(id)}/members`, 'POST', { email, role }),
  };

  const canvasApi: PotentiaCanvases = {
    list: async () => (await call<{ canvases: CanvasInfo[] }>('canvas', 'GET')).canvases,
    create: async (workspaceId, title) => {
      const { canvas_id } = await call<{ canvas_id: string }>('canvas', 'POST', { workspace_id: workspaceId, title });
      return { canvas_id };
    },
  };

  const canvas = (canvasId: string): Canvas => {
    const open = canvases.get(canvasId);
    if (open && open.status !== 'closed') return open;
    const c = new Canvas(canvasId, {
      url,
      WebSocket: WebSocketClass,
      token: async () => {
        const token = await accessToken();
        if (!token) throw new PotentiaError('unauthorized', 'not signed in: call auth.signIn first');
        return token;
      },
      checkAccess: async () => {
        try {
          return await call<{ can_write: boolean }>(`canvas/${encodeURIComponent(canvasId)}/permissions`, 'GET');
        } catch (err) {
          if (err instanceof PotentiaError && (err.code === 'forbidden' || err.code === 'not_found')) {
            throw new AccessLostError(err.code, err.code === 'forbidden' ? 'you have no access to this canvas' : 'no such canvas');
          }
          throw err;
        }
      },
      ...(options.canvas ? { sync: options.canvas } : {}),
      onClose: (closed) => {
        if (canvases.get(canvasId) === closed) canvases.delete(canvasId);
      },
    });
    canvases.set(canvasId, c);
    return c;
  };

  return { supabase, auth, workspaces, canvases: canvasApi, canvas };
}
