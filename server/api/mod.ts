/**
 * The server's thin edge towards browsers and operators: HTTP routing (the signed server
 * endpoints included), the WebSocket hub that maps browser frames to `server/users` services,
 * and the PWA's static files. It keeps no session, ring or storage logic of its own.
 */
export {
  ClientHub,
  type ClientHubDeps,
  type ClientHubOptions,
  type ClientSocket,
} from "./client_hub.ts";
export { createHandler, type HttpDeps, type HttpOptions } from "./http.ts";
export { type IoLagProbe, startIoLagProbe } from "./io_lag.ts";
export { DEFAULT_MAX_WS_MESSAGE_BYTES, serveWithWsFront, type WsFront } from "./ws_front.ts";
