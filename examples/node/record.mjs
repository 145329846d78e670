// Records a realistic task lifecycle into `arbiter-events serve` with Node's built-in
// fetch (Node 18+; no npm packages).
//
//   ARBITER_EVENTS_RECORD_TOKEN=... node examples/node/record.mjs [http://127.0.0.1:7474]
//
// Prints one JSON line: what the server accepted. Exits non-zero on any refusal.

const base = process.argv[2] ?? process.env.ARBITER_URL ?? "http://127.0.0.1:7474";
const token = process.env.ARBITER_EVENTS_RECORD_TOKEN;
if (!token) {
  console.error("set ARBITER_EVENTS_RECORD_TOKEN (printed by `serve` on first start, kept in DATA_DIR/server/record.token)");
  process.exit(2);
}

async function call(path, body, contentType = "application/json") {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(base + path, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": contentType },
      body,
    });
    const answer = await response.json();
    // A full queue: wait as told and send the rest (`retry_from`) again.
    if (response.status === 429 && attempt < 10) {
      await new Promise((r) => setTimeout(r, 1000 * Number(response.headers.get("retry-after") ?? 1)));
      if (answer.retry_from !== undefined && contentType === "application/x-ndjson") {
        body = body.split("\n").filter((l) => l.trim()).slice(answer.retry_from).join("\n");
      }
      continue;
    }
    if (!response.ok) {
      throw new Error(`${path}: ${response.status} ${JSON.stringify(answer)}`);
    }
    return answer;
  }
}

/** Sends events as one NDJSON batch; returns how many were accepted. */
async function record(events) {
  const answer = await call("/v1/events", events.map((e) => JSON.stringify(e)).join("\n"), "application/x-ndjson");
  if (answer.rejected.length > 0) {
    throw new Error(`rejected: ${JSON.stringify(answer.rejected)}`);
  }
  return answer.accepted;
}

const task = "task-pr-4821-review";
const reviewer = "agent-claude-reviewer-01";
const tester = "agent-gpt-tester-02";
let accepted = 0;

// The registry and the routing decision.
accepted += await record([
  { type: "agent_registered", agent_id: reviewer, capabilities: ["code-review", "typescript"],
    baseline: { latency_ms: 1840.5, accuracy: 0.91, cost_per_task: 0.042, reliability: 0.985 } },
  { type: "agent_registered", agent_id: tester, capabilities: ["test-generation", "typescript"],
    baseline: { latency_ms: 2210.0, accuracy: 0.84, cost_per_task: 0.031, reliability: 0.97 } },
  { type: "agent_status_changed", agent_id: reviewer, status: "available", previous: null, reason: null },
  { type: "routing_decision", task_id: task, selected_agent: reviewer, strategy: "capability_match",
    confidence: 0.93, alternatives: [{ agent_id: tester, score: 0.61, reason: "no code-review capability" }],
    rationale: "reviewer matches 2 of 2 required capabilities" },
  { type: "thinking_budget_allocated", task_id: task, allocated_tokens: 16384, complexity: "standard", confidence: 0.78 },
]);

// The execution: started and completed on the server, which measures the duration.
const { execution_id } = await call("/v1/tasks/start", JSON.stringify({
  task_id: task, agent_id: reviewer, context: { task_type: "code-review", files_changed: 7 },
}));
accepted += 1;
accepted += await record([
  { type: "thinking_budget_used", task_id: task, tokens_used: 11502, tokens_allocated: 16384 },
  { type: "constitutional_validation", task_id: task, agent_id: reviewer, valid: true,
    violations: [{ severity: "low", message: "review comment lacks a suggested fix", rule: "CAWS-REVIEW-003" }],
    compliance_score: 0.96, processing_time_ms: 18.2, rule_count: 24 },
]);
const { duration_ms } = await call(`/v1/tasks/${execution_id}/complete`, JSON.stringify({
  status: "succeeded", quality_score: 0.89, efficiency_score: 0.77, tokens_consumed: 11502,
}));
accepted += 1;

// How it was judged.
accepted += await record([
  { type: "judgment_recorded", task_id: task, overall_score: 0.87, overall_confidence: 0.81, all_criteria_pass: true,
    criteria_scores: { actionability: 0.84, correctness: 0.93 }, evaluation_time_ms: 1904.6 },
  { type: "evaluation_outcome", task_id: task, passed: true, score: 0.88,
    rubric_scores: { caught_known_bugs: 1.0 }, feedback: null },
]);

console.log(JSON.stringify({ accepted, execution_id, duration_ms }));
