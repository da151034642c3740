/** Structured logging: every component logs an event name and fields through one {@link Log}. */

/** A structured log sink: an event name and fields. */
export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** Writes one JSON line per event to stderr, with an ISO time: the server's log. */
export const jsonLog: Log = (event, fields = {}) => {
  console.error(JSON.stringify({ time: new Date().toISOString(), event, ...fields }));
};

/** Drops every event (for tests that do not read the log). */
export const silentLog: Log = () => {};
