/**
 * Builds the users services of one server in dependency order — `LocalSessions` → `Presence` →
 * `Routing` → `Accounts` → `Sessions`, `Mailboxes` — each given exactly its collaborators. The
 * server's `main.ts` and the unit tests' fakes wire them through this one function.
 */
import type { Clock } from "../../shared/clock.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import { Accounts, type AccountsOptions } from "./accounts.ts";
import { LocalSessions } from "./local_sessions.ts";
import { Mailboxes } from "./mailboxes.ts";
import type {
  AccountRecords,
  ClusterCall,
  MailboxRecords,
  MembershipView,
  PresenceRecords,
} from "./ports.ts";
import { Presence, type PresenceOptions } from "./presence.ts";
import { Routing } from "./routing.ts";
import { Sessions, type SessionsOptions } from "./sessions.ts";
import { LocalLimits, type SharedLimits } from "./shared_limits.ts";
import type { Tokens } from "./tokens.ts";

/** What the users services need from the layers below. */
export interface UserServicesDeps {
  /** Accounts, presence and mailboxes as ring records (the `Replicator`). */
  records: AccountRecords & PresenceRecords & MailboxRecords;
  membership: MembershipView;
  call: ClusterCall;
  tokens: Tokens;
  metrics: Metrics;
  log: Log;
  clock: Clock;
  /**
   * Login and registration limits (the ring-shared `RingLimits` in the server). Without it, this
   * process's own counters, with the rules of `options.sessions.limits` and
   * `options.accounts.registrationsPerAddress`.
   */
  limits?: SharedLimits;
  /** How far behind this process's socket reads are now, in ms (see `SessionsDeps.ioLag`). */
  ioLag?: () => number;
}

/** Configuration of every users service. */
export interface UserServicesOptions {
  accounts?: AccountsOptions;
  presence?: PresenceOptions;
  sessions?: SessionsOptions;
}

/** The users services of one server. */
export interface UserServices {
  local: LocalSessions;
  presence: Presence;
  routing: Routing;
  accounts: Accounts;
  sessions: Sessions;
  mailboxes: Mailboxes;
  /** Starts the services' rounds (presence refresh, heartbeat sweep). */
  start(): void;
  /** Ends every session (presence written offline) and stops the rounds. */
  stop(): Promise<void>;
}

/** Builds the users services. */
export function createUserServices(
  deps: UserServicesDeps,
  options: UserServicesOptions = {},
): UserServices {
  const { records, membership, call, tokens, metrics, log, clock } = deps;
  const local = new LocalSessions({ metrics });
  const presence = new Presence(
    { records, membership, call, local, metrics, log, clock },
    options.presence,
  );
  const routing = new Routing({ local, presence, membership, call, log });
  const limits = deps.limits ?? new LocalLimits({
    ...options.sessions?.limits,
    ...(options.accounts?.registrationsPerAddress
      ? { registrationsPerAddress: options.accounts.registrationsPerAddress }
      : {}),
  }, clock);
  const fakeSalt = (username: string) => tokens.fakeSalt(username);
  const accounts = new Accounts(
    { records, fakeSalt, limits, metrics, clock },
    options.accounts,
  );
  const sessions = new Sessions(
    {
      accounts,
      tokens,
      local,
      presence,
      routing,
      membership,
      limits,
      metrics,
      log,
      clock,
      ioLag: deps.ioLag,
    },
    options.sessions,
  );
  const mailboxes = new Mailboxes({ records, accounts, routing, metrics, log, clock });
  return {
    local,
    presence,
    routing,
    accounts,
    sessions,
    mailboxes,
    start() {
      presence.start();
      sessions.start();
    },
    async stop() {
      // Sessions end first, so their presence records are written offline while the ring runs.
      sessions.stop();
      await presence.stop();
    },
  };
}
