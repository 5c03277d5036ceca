// A constant stream of POST /payments (open loop), for loadtest/probe.py:
// RATE requests per second for DURATION, fresh UUIDs, k6's own latency summary.
import http from "k6/http";

export const options = {
  summaryTrendStats: ["med", "p(90)", "p(99)", "max"],
  scenarios: {
    steady: {
      executor: "constant-arrival-rate",
      rate: parseInt(__ENV.RATE || "400", 10),
      timeUnit: "1s",
      duration: __ENV.DURATION || "15s",
      preAllocatedVUs: 200,
      maxVUs: 600,
    },
  },
};

const BACKEND = __ENV.BACKEND_URL || "http://127.0.0.1:9999";
const HEX = "0123456789abcdef";

function uuid4() {
  let s = "";
  for (let i = 0; i < 32; i++) s += HEX[Math.floor(Math.random() * 16)];
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-4${s.slice(13, 16)}-a${s.slice(17, 20)}-${s.slice(20)}`;
}

export default function () {
  http.post(`${BACKEND}/payments`, JSON.stringify({ correlationId: uuid4(), amount: 19.9 }),
    { headers: { "Content-Type": "application/json" } });
}

export function handleSummary(data) {
  const d = data.metrics.http_req_duration.values;
  return { stdout: JSON.stringify({ requests: data.metrics.http_reqs.values.count,
    p50_ms: d.med, p90_ms: d["p(90)"], p99_ms: d["p(99)"], max_ms: d.max }) + "\n" };
}
