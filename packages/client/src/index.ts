/**
 * @potentia/client — the browser and Node client of Potentia (README.md of this package).
 *
 * createPotentiaClient() gives auth, workspaces, canvases and live canvases (Canvas: optimistic
 * block tree, text OT, presence). CanvasSync and TextOtClient are the lower layers, for those who
 * want the H1 socket without the rest.
 */
export { createPotentiaClient } from './client.ts';
export type {
  AddMemberResult, CallOptions, CanvasInfo, CreateCanvasOptions, CreateWorkspaceOptions, PotentiaAuth, PotentiaCanvases, PotentiaClient, PotentiaClientOptions, PotentiaUser,
  PotentiaWorkspaces, Role, Workspace, WorkspaceInvite, WorkspaceMember,
} from './client.ts';
export { Canvas } from './canvas.ts';
export type { CanvasChangeCause, CanvasSnapshotView, CanvasStatus, ChangeOptions, ConnectOptions, CreateInput, MoveInput, UpdateInput } from './canvas.ts';
export type { Block, BlockNode } from './blocks.ts';
export { CanvasPresence, PRESENCE_MAX_BYTES, PRESENCE_SENDS_PER_SECOND } from './presence.ts';
export type { PresenceCursor, PresenceInput, PresencePeer, PresenceSelection } from './presence.ts';
export { AbortError, AccessLostError, ConflictError, PotentiaError, RateLimitedError, TimeoutError } from './errors.ts';
export type { ConflictField } from './errors.ts';
export { CanvasSync, defaultReconnectDelayMs } from './canvas-sync.ts';
export type { CanvasSyncOptions, Mutation, MutationOutcome, SocketHandler, TextChange, WebSocketConstructor, WebSocketLike } from './canvas-sync.ts';
export { TextOtClient, transformPosition, transformSelection } from './text-ot.ts';
export type { TextLoss, TextLossReason, TextOp, TextOtState } from './text-ot.ts';
/** The HTTP API's types, generated from the OpenAPI document: `components['schemas']['Block']`, `paths`, `operations`. */
export type { components as ApiSchemas, operations as ApiOperations, paths as ApiPaths } from './api-types.ts';
/** The H1 wire types (server → client frames), for those who use CanvasSync directly. */
export type * as H1 from './protocol.ts';
