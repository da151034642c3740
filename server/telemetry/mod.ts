/**
 * The ground floor of the server: the structured {@link Log} every component writes to and the
 * {@link Metrics} registry rendered at `/metrics`. It imports nothing of the server, so every
 * other folder may use it; it owns no I/O beyond writing log lines to stderr.
 */
export { jsonLog, type Log, silentLog } from "./log.ts";
export { Metrics } from "./metrics.ts";
export { hasOperatorToken } from "./operator_access.ts";
