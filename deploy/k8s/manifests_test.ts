/**
 * The Kubernetes manifests: every file kustomization.yaml lists parses as YAML, the pieces fit
 * together (the StatefulSet's headless service is the DNS discovery name, readiness on /healthz,
 * TLS from one Secret), and every environment variable the server container gets is one the
 * server reads (server/config.ts), with values it accepts.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { parseConfig, type ServerConfig } from "../../server/config.ts";

const DIR = new URL("./", import.meta.url);

// deno-lint-ignore no-explicit-any
type Doc = any;

/** Every document of every file the kustomization lists; fails on any YAML error. */
async function loadManifests(): Promise<Doc[]> {
  const kustomization = await parseFile("kustomization.yaml");
  const files: string[] = kustomization[0].resources;
  assert.ok(files.length > 0, "kustomization lists its resources");
  const docs: Doc[] = [];
  for (const file of files) docs.push(...await parseFile(file));
  return docs;
}

async function parseFile(file: string): Promise<Doc[]> {
  const text = await Deno.readTextFile(new URL(file, DIR));
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw new Error(`${file}: not a YAML stream`);
  const out: Doc[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
    out.push(doc.toJS());
  }
  return out;
}

function find(docs: Doc[], kind: string, name: string): Doc {
  const doc = docs.find((d) => d.kind === kind && d.metadata?.name === name);
  if (!doc) throw new Error(`No ${kind} named ${name} in deploy/k8s`);
  return doc;
}

/** Sample values for what the cluster fills in at run time (Secrets, the pod's address). */
const POD_IP = "10.42.0.7";
const SECRET_SAMPLES: Record<string, string> = {
  "cluster-secret": "0123456789abcdef0123456789abcdef",
  "operator-token": "fedcba9876543210fedcba9876543210",
  "turn-secret": "00112233445566778899aabbccddeeff",
};

/**
 * The container's environment as the kubelet would give it: `$(NAME)` references expanded from
 * earlier variables, Secret and field references replaced by sample values.
 */
function containerEnv(container: Doc): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    let value: string;
    if (typeof e.value === "string") {
      value = e.value.replace(/\$\((\w+)\)/g, (_: string, ref: string) => {
        if (!(ref in env)) throw new Error(`${e.name} refers to $(${ref}), not defined before it`);
        return env[ref]!;
      });
    } else if (e.valueFrom?.fieldRef?.fieldPath === "status.podIP") {
      value = POD_IP;
    } else if (e.valueFrom?.secretKeyRef) {
      const key = e.valueFrom.secretKeyRef.key;
      if (!(key in SECRET_SAMPLES)) {
        throw new Error(`${e.name}: no sample value for Secret key ${key}`);
      }
      value = SECRET_SAMPLES[key]!;
    } else {
      throw new Error(`${e.name}: unsupported value ${JSON.stringify(e)}`);
    }
    env[e.name] = value;
  }
  return env;
}

/**
 * Parses `env` as the server would, and returns its configuration and the variables the server
 * read. Throws the server's own ConfigError for a value it refuses.
 */
function serverReads(env: Record<string, string>): { config: ServerConfig; read: Set<string> } {
  const read = new Set<string>();
  const watched = new Proxy(env, {
    get(target, key) {
      if (typeof key === "string") read.add(key);
      return Reflect.get(target, key);
    },
  });
  const config = parseConfig([], watched);
  if (config === "help") throw new Error("parseConfig answered help");
  return { config, read };
}

/** The variables of `env` the server does not read (helper variables used by others aside). */
function unknownVariables(env: Record<string, string>, read: Set<string>, container: Doc) {
  const referenced = new Set(
    (container.env ?? []).flatMap((e: Doc) =>
      typeof e.value === "string" ? [...e.value.matchAll(/\$\((\w+)\)/g)].map((m) => m[1]) : []
    ),
  );
  return Object.keys(env).filter((name) => !read.has(name) && !referenced.has(name));
}

Deno.test("k8s: the manifests parse, and the StatefulSet, its headless service, ingress and coturn fit together", async () => {
  const docs = await loadManifests();
  for (const d of docs) {
    assert.ok(d.apiVersion && d.kind && d.metadata?.name, `incomplete: ${JSON.stringify(d)}`);
    if (d.kind !== "Namespace") assert.equal(d.metadata.namespace, "p2pchat", d.metadata.name);
  }
  const sts = find(docs, "StatefulSet", "p2pchat");
  const ring = find(docs, "Service", sts.spec.serviceName);
  assert.equal(ring.spec.clusterIP, "None", "the StatefulSet's service is headless");
  assert.equal(ring.spec.publishNotReadyAddresses, true);
  const labels = sts.spec.template.metadata.labels;
  assert.deepEqual(sts.spec.selector.matchLabels, labels);
  assert.deepEqual(ring.spec.selector, labels);

  const server = sts.spec.template.spec.containers[0];
  const port = server.ports.find((p: Doc) => p.name === "http");
  assert.equal(server.readinessProbe.httpGet.path, "/healthz");
  assert.equal(server.readinessProbe.httpGet.port, port.name);
  assert.equal(ring.spec.ports[0].targetPort, port.name);

  const ingress = find(docs, "Ingress", "p2pchat");
  const tlsSecret = ingress.spec.tls[0].secretName;
  const web = find(docs, "Service", ingress.spec.rules[0].http.paths[0].backend.service.name);
  assert.deepEqual(web.spec.selector, labels);

  const coturn = find(docs, "Deployment", "coturn");
  const turn = coturn.spec.template.spec;
  assert.ok(turn.containers[0].args.includes("--use-auth-secret"));
  // The servers make TURN credentials with the secret coturn checks.
  const secretOf = (env: Doc[], name: string) =>
    env.find((e: Doc) => e.name === name)?.valueFrom?.secretKeyRef;
  assert.deepEqual(
    secretOf(server.env, "P2P_TURN_SECRET"),
    secretOf(turn.containers[0].env, "TURN_SECRET"),
  );
  assert.equal(
    turn.volumes.find((v: Doc) => v.secret)?.secret.secretName,
    tlsSecret,
    "coturn's TLS is the ingress's Secret",
  );
});

Deno.test("k8s: every variable the server container sets is one the server reads, with a valid value", async () => {
  const docs = await loadManifests();
  const sts = find(docs, "StatefulSet", "p2pchat");
  const server = sts.spec.template.spec.containers[0];
  const env = containerEnv(server);
  const { config, read } = serverReads(env);
  assert.deepEqual(unknownVariables(env, read, server), [], "variables the server ignores");

  // The values mean what the manifests intend.
  const port = server.ports.find((p: Doc) => p.name === "http").containerPort;
  assert.equal(config.port, port);
  assert.equal(config.publicUrl, `http://${POD_IP}:${port}`);
  const ring = find(docs, "Service", sts.spec.serviceName);
  assert.deepEqual(config.discovery, {
    mode: "dns",
    name: `${ring.metadata.name}.${ring.metadata.namespace}.svc.cluster.local`,
    port,
    scheme: "http",
    intervalMs: Number(env.P2P_ANNOUNCE_INTERVAL_MS),
  });
  const host = find(docs, "Ingress", "p2pchat").spec.rules[0].host;
  assert.equal(config.browserUrl, `https://${host}`, "browsers use the ingress's one name");
  assert.equal(config.ice.turnSecret, SECRET_SAMPLES["turn-secret"]);
  assert.ok(config.ice.turnUrls.length > 0 && config.ice.stunUrls.length > 0);
  const data = server.volumeMounts.find((m: Doc) => m.name === "data");
  assert.equal(config.dataDir, data.mountPath);
  assert.ok(sts.spec.volumeClaimTemplates.some((t: Doc) => t.metadata.name === "data"));
});

Deno.test("k8s check: a variable the server does not read, or a value it refuses, is caught", () => {
  const container = { env: [] };
  const good = {
    P2P_CLUSTER_SECRET: SECRET_SAMPLES["cluster-secret"]!,
    P2P_DISCOVERY: "dns",
    P2P_DISCOVERY_DNS: "ring.example",
  };
  const { read } = serverReads(good);
  assert.deepEqual(unknownVariables(good, read, container), []);
  const typo = { ...good, P2P_DISCOVERY_DNS_NAME: "ring.example" };
  assert.deepEqual(unknownVariables(typo, serverReads(typo).read, container), [
    "P2P_DISCOVERY_DNS_NAME",
  ]);
  assert.throws(() => serverReads({ ...good, P2P_PORT: "eighty" }), /--port must be a whole/);
});
