// The official Rinha de Backend 2025 test, reproduced from docs/contract.md §3:
// a ramp to MAX_REQUESTS VUs posting payments, the processors' fault schedule
// driven through their admin endpoints, a consistency audit every 10 s, and the
// final score breakdown (written to RESULT_JSON by handleSummary).
import http from "k6/http";
import { sleep } from "k6";
import { Counter, Gauge } from "k6/metrics";

const BACKEND = __ENV.BACKEND_URL || "http://127.0.0.1:9999";
const PROCESSORS = {
  default: __ENV.PROCESSOR_DEFAULT_URL || "http://127.0.0.1:8001",
  fallback: __ENV.PROCESSOR_FALLBACK_URL || "http://127.0.0.1:8002",
};
const MAX_REQUESTS = parseInt(__ENV.MAX_REQUESTS || "550", 10);
const RAMP = parseFloat(__ENV.RAMP_SECONDS || "60");
const SCALE = RAMP / 60;
const SKIP_FAULTS = __ENV.SKIP_FAULTS === "1";
const INITIAL_TOKEN = __ENV.PROCESSOR_TOKEN || "123";
const RESULT_JSON = __ENV.RESULT_JSON || "loadtest/results/result.json";

// [at second, default delay, default failing, fallback delay, fallback failing]
const SCHEDULE = [
  [1, 0, false, 0, false],
  [10, 100, false, 0, false],
  [20, 100, true, 0, false],
  [30, 2000, true, 1000, true],
  [40, 20, false, 20, false],
  [50, 0, false, 5000, false],
];

const accepted = new Counter("payments_accepted");
const rejected = new Counter("payments_failed");
const inconsistencies = new Counter("audit_inconsistencies");
const audits = new Counter("audits");
const finalDefaultRequests = new Gauge("final_default_requests");
const finalDefaultAmount = new Gauge("final_default_amount");
const finalFallbackRequests = new Gauge("final_fallback_requests");
const finalFallbackAmount = new Gauge("final_fallback_amount");
const feeDefault = new Gauge("fee_default");
const feeFallback = new Gauge("fee_fallback");

// Requests are tagged with the 10-second phase of the fault schedule they fall
// in, so the summary can say where the slow ones are (thresholds that cannot
// fail make k6 keep those sub-metrics).
const PHASES = [0, 1, 2, 3, 4, 5];
const thresholds = { "http_req_duration{expected_response:true}": ["p(99)<1000000"] };
for (const phase of PHASES) thresholds[`http_req_duration{phase:${phase}}`] = ["p(99)<1000000"];

export const options = {
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"],
  thresholds,
  scenarios: {
    payments: {
      executor: "ramping-vus",
      exec: "payments",
      startVUs: 1,
      stages: [{ target: MAX_REQUESTS, duration: `${RAMP}s` }],
      gracefulRampDown: "0s",
      gracefulStop: "2s",
    },
    faults: {
      executor: "per-vu-iterations",
      exec: "faults",
      vus: 1,
      iterations: 1,
      maxDuration: `${RAMP + 5}s`,
    },
    audit: {
      executor: "constant-arrival-rate",
      exec: "audit",
      rate: 1,
      timeUnit: "10s",
      // Ends with the load, so teardown's final window covers the whole test.
      duration: `${Math.max(RAMP - 10, 1)}s`,
      startTime: "10s",
      preAllocatedVUs: 1,
      maxVUs: 2,
    },
  },
};

function uuidv4() {
  const hex = "0123456789abcdef";
  let out = "";
  for (let i = 0; i < 36; i++) {
    if (i === 8 || i === 13 || i === 18 || i === 23) out += "-";
    else if (i === 14) out += "4";
    else if (i === 19) out += hex[(Math.random() * 4) | 8];
    else out += hex[(Math.random() * 16) | 0];
  }
  return out;
}

function iso(ms) {
  return new Date(ms).toISOString();
}

function admin(token) {
  return { headers: { "X-Rinha-Token": token, "Content-Type": "application/json" }, timeout: "5s" };
}

function configure(token, name, delay, failing) {
  http.put(`${PROCESSORS[name]}/admin/configurations/delay`, JSON.stringify({ delay }), admin(token));
  http.put(`${PROCESSORS[name]}/admin/configurations/failure`, JSON.stringify({ failure: failing }), admin(token));
}

function processorSummary(token, name, from, to) {
  const query = from && to ? `?from=${from}&to=${to}` : "";
  const res = http.get(`${PROCESSORS[name]}/admin/payments-summary${query}`, admin(token));
  return res.status === 200 ? res.json() : null;
}

function backendSummary(from, to) {
  const res = http.get(`${BACKEND}/payments-summary?from=${from}&to=${to}`, { timeout: "5s" });
  return res.status === 200 ? res.json() : null;
}

export function setup() {
  const token = `rinha-${uuidv4().slice(0, 8)}`;
  for (const name of Object.keys(PROCESSORS)) {
    const res = http.put(`${PROCESSORS[name]}/admin/configurations/token`, JSON.stringify({ token }), admin(INITIAL_TOKEN));
    if (res.status !== 204) throw new Error(`could not set the ${name} processor's token: ${res.status}`);
    configure(token, name, 0, false);
    http.post(`${PROCESSORS[name]}/admin/purge-payments`, null, admin(token));
  }
  http.post(`${BACKEND}/purge-payments`, null, { timeout: "5s" });
  return { token, started: Date.now() };
}

function phaseOf(started) {
  return String(Math.min(5, Math.max(0, Math.floor((Date.now() - started) / (10000 * SCALE)))));
}

export function payments(data) {
  const body = JSON.stringify({ correlationId: uuidv4(), amount: 19.9 });
  const res = http.post(`${BACKEND}/payments`, body, {
    headers: { "Content-Type": "application/json" },
    timeout: "1500ms",
    tags: { phase: phaseOf(data.started) },
  });
  if (res.status >= 200 && res.status < 300) accepted.add(1);
  else rejected.add(1);
  sleep(1);
}

export function faults(data) {
  if (SKIP_FAULTS) return;
  for (const [at, dDelay, dFail, fDelay, fFail] of SCHEDULE) {
    const wait = data.started + at * SCALE * 1000 - Date.now();
    if (wait > 0) sleep(wait / 1000);
    configure(data.token, "default", dDelay, dFail);
    configure(data.token, "fallback", fDelay, fFail);
  }
}

export function audit(data) {
  const now = Date.now();
  const from = iso(now - 15000);
  const to = iso(now - 1500);
  const ours = backendSummary(from, to);
  const def = processorSummary(data.token, "default", from, to);
  const fb = processorSummary(data.token, "fallback", from, to);
  if (!ours || !def || !fb) return;
  audits.add(1);
  const diff = ours.default.totalRequests - def.totalRequests + (ours.fallback.totalRequests - fb.totalRequests);
  inconsistencies.add(Math.abs(diff));
}

export function teardown(data) {
  sleep(2);
  const now = Date.now();
  const from = iso(now - (RAMP + 10) * 1000);
  const to = iso(now);
  const ours = backendSummary(from, to);
  const def = processorSummary(data.token, "default", from, to);
  const fb = processorSummary(data.token, "fallback", from, to);
  if (ours) {
    finalDefaultRequests.add(ours.default.totalRequests);
    finalDefaultAmount.add(ours.default.totalAmount);
    finalFallbackRequests.add(ours.fallback.totalRequests);
    finalFallbackAmount.add(ours.fallback.totalAmount);
  }
  feeDefault.add(def ? def.feePerTransaction : 0.05);
  feeFallback.add(fb ? fb.feePerTransaction : 0.15);
  // Leave the processors as we found them: healthy, with the token we were given.
  for (const name of Object.keys(PROCESSORS)) {
    configure(data.token, name, 0, false);
    http.put(`${PROCESSORS[name]}/admin/configurations/token`, JSON.stringify({ token: INITIAL_TOKEN }), admin(data.token));
  }
}

function metric(data, name, stat) {
  const m = data.metrics[name];
  return m && m.values && m.values[stat] !== undefined ? m.values[stat] : 0;
}

const round2 = (x) => Math.round(x * 100) / 100;

export function handleSummary(data) {
  const p99 = metric(data, "http_req_duration{expected_response:true}", "p(99)");
  const defaultRequests = metric(data, "final_default_requests", "value");
  const fallbackRequests = metric(data, "final_fallback_requests", "value");
  const defaultAmount = metric(data, "final_default_amount", "value");
  const fallbackAmount = metric(data, "final_fallback_amount", "value");
  const gross = defaultAmount + fallbackAmount;
  const fees = defaultAmount * metric(data, "fee_default", "value") + fallbackAmount * metric(data, "fee_fallback", "value");
  const p99Rounded = round2(p99);
  const bonus = round2(Math.max((11 - p99Rounded) * 0.02, 0));
  const inconsistent = metric(data, "audit_inconsistencies", "count");
  const fine = inconsistent > 0 ? 0.35 : 0;
  const acceptedCount = metric(data, "payments_accepted", "count");
  const result = {
    max_requests: MAX_REQUESTS,
    ramp_seconds: RAMP,
    faults: !SKIP_FAULTS,
    p99_ms: p99Rounded,
    p99_all_requests_ms: round2(metric(data, "http_req_duration", "p(99)")),
    p99_post_by_phase_ms: PHASES.map((p) => round2(metric(data, `http_req_duration{phase:${p}}`, "p(99)"))),
    median_ms: round2(metric(data, "http_req_duration{expected_response:true}", "med")),
    bonus,
    accepted: acceptedCount,
    failed_posts: metric(data, "payments_failed", "count"),
    payments_default: defaultRequests,
    payments_fallback: fallbackRequests,
    amount_default: round2(defaultAmount),
    amount_fallback: round2(fallbackAmount),
    default_share: defaultRequests + fallbackRequests > 0 ? defaultRequests / (defaultRequests + fallbackRequests) : 0,
    lag: acceptedCount - (defaultRequests + fallbackRequests),
    audits: metric(data, "audits", "count"),
    inconsistencies: inconsistent,
    gross: round2(gross),
    fees: round2(fees),
    fine,
    net: round2((gross - fees) * (1 + bonus - fine)),
  };
  const lines = [
    `p99 ${result.p99_ms} ms (median ${result.median_ms} ms) -> bonus ${(bonus * 100).toFixed(0)}%`,
    `p99 of POST /payments by 10 s phase: ${result.p99_post_by_phase_ms.join(" / ")} ms`,
    `accepted ${result.accepted}, failed POSTs ${result.failed_posts}`,
    `processed default ${defaultRequests} / fallback ${fallbackRequests} (default share ${(result.default_share * 100).toFixed(2)}%), lag ${result.lag}`,
    `audits ${result.audits}, inconsistencies ${inconsistent} -> fine ${fine * 100}%`,
    `gross ${result.gross}, fees ${result.fees}, net ${result.net}`,
  ];
  return {
    stdout: `\n=== score ===\n${lines.join("\n")}\n`,
    [RESULT_JSON]: JSON.stringify(result, null, 2),
  };
}
