// etcd-monitor dashboard: plain JavaScript, no external assets.
"use strict";
const $ = (sel) => document.querySelector(sel);
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
const TOKEN_KEY = "etcd-monitor-token";
let cluster = null;
let me = null; // GET /api/v1/whoami: who we are and what we may do

// The API token lives in sessionStorage (this tab only) and travels as a
// bearer header; the monitor never uses cookies.
const token = () => sessionStorage.getItem(TOKEN_KEY);
function headers(extra) {
  const h = { ...(extra || {}) };
  if (token()) h.authorization = `Bearer ${token()}`;
  return h;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: headers(options.headers) });
  const body = await r.json().catch(() => ({}));
  const message = (body.error && body.error.message) || r.statusText;
  if (r.status === 401) signIn(message);
  if (!r.ok) throw new Error(message);
  return body;
}
const post = (path, body) => api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const allowed = (what) => !!me && (me.allowed || []).includes(what);

function signIn(why) {
  const d = $("#signin");
  $("#signin-why").textContent = why || "This monitor needs an API token.";
  if (!d.open) d.showModal();
}

$("#signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const candidate = $("#token").value.trim();
  const r = await fetch("/api/v1/whoami", { headers: { authorization: `Bearer ${candidate}` } });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    $("#signin-error").textContent = (body.error && body.error.message) || r.statusText;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  location.reload();
});
$("#signout").addEventListener("click", () => {
  if (!token()) return signIn("Sign in with an API token.");
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// Shows who is signed in and hides what their role may not do.
function applyIdentity() {
  $("#whoami").textContent = `${me.principal} (${me.role})`;
  $("#whoami").dataset.role = me.role;
  const out = $("#signout");
  out.hidden = false;
  out.textContent = token() ? "Sign out" : "Sign in";
  document.querySelectorAll("[data-needs]").forEach((el) => { el.hidden = !allowed(el.dataset.needs); });
}
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const base = () => `/api/v1/clusters/${encodeURIComponent(cluster)}`;
function bytes(n) {
  if (n == null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n.toFixed(0)) + " " + u[i];
}

async function loadClusters() {
  const { clusters } = await api("/api/v1/clusters");
  const sel = $("#cluster");
  sel.innerHTML = clusters.map((c) => `<option>${esc(c.name)}</option>`).join("");
  cluster = cluster || (clusters[0] && clusters[0].name);
  sel.value = cluster;
}

async function loadMembers() {
  let data;
  try { data = await api(`${base()}/members`); } catch (e) { $("#members tbody").innerHTML = `<tr><td colspan="8" class="muted">${esc(e.message)}</td></tr>`; return; }
  $("#checked").textContent = "checked " + new Date(data.checked_at_ms).toLocaleTimeString();
  $("#members tbody").innerHTML = data.members.map((m) => {
    const state = !m.reachable ? "DOWN" : m.is_leader ? "★ leader" : m.is_learner ? "learner" : "follower";
    const ratio = m.quota_backend_bytes && m.db_size != null ? m.db_size / m.quota_backend_bytes : null;
    const cls = ratio == null ? "" : ratio >= 0.95 ? "crit" : ratio >= 0.8 ? "warn" : "";
    const bar = ratio == null ? "" : `<span class="bar"><span class="${cls}" style="width:${Math.min(100, ratio * 100).toFixed(1)}%"></span></span>`;
    return `<tr class="${m.reachable ? "" : "down"}" data-member="${esc(m.name)}" data-state="${m.reachable ? (m.is_leader ? "leader" : "up") : "down"}">
      <td class="${m.is_leader ? "leader" : ""}">${esc(m.name)}</td><td>${esc(m.id)}</td><td>${esc(m.endpoint)}</td>
      <td>${esc(state)}${m.error ? ` <small title="${esc(m.error)}">(why?)</small>` : ""}</td>
      <td>${m.raft_term ?? ""}</td><td>${m.raft_index ?? ""}</td>
      <td>${m.db_size != null ? bar + bytes(m.db_size) + (m.quota_backend_bytes ? " / " + bytes(m.quota_backend_bytes) : "") : ""}</td>
      <td>${m.status_latency_ms != null ? m.status_latency_ms.toFixed(1) + " ms" : ""}</td></tr>`;
  }).join("");
}

async function loadStatus() {
  try {
    const s = await api(`${base()}/status`);
    const v = $("#verdict");
    v.textContent = s.verdict.toUpperCase();
    v.className = "badge " + s.verdict;
    $("#findings").innerHTML = s.findings.length
      ? s.findings.map((f) => `<li><span class="sev ${f.severity}">${f.severity}</span> ${esc(f.message)} <a class="runbook" href="/runbooks#finding-${esc(f.kind)}">runbook</a></li>`).join("")
      : `<li class="muted">No findings: every check passed.</li>`;
  } catch (e) {
    $("#verdict").textContent = "NO DATA"; $("#verdict").className = "badge";
    $("#findings").innerHTML = `<li class="muted">${esc(e.message)}</li>`;
  }
}

async function loadLeaders() {
  try {
    const l = await api(`${base()}/leader?since=7d`);
    const now = l.leader ? `<li><b>now:</b> ${esc(l.leader.name || l.leader.id)} (term ${l.leader.term ?? "?"})</li>` : `<li class="muted">no agreed leader</li>`;
    const changes = l.changes.slice().reverse().map((c) =>
      `<li>${new Date(c.at_ms).toLocaleString()}: ${esc(c.old_name || c.old_leader || "?")} → <b>${esc(c.new_name || c.new_leader)}</b> (term ${c.term ?? "?"})</li>`).join("");
    $("#leaders").innerHTML = now + (changes || `<li class="muted">no leader change recorded</li>`);
  } catch (e) { $("#leaders").innerHTML = `<li class="muted">${esc(e.message)}</li>`; }
}

function draw(svg, series, scale) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) { svg.innerHTML = `<text x="8" y="20">no data in this range yet</text>`; return; }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1] * scale);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1, y1 = Math.max(...ys, 1e-9) * 1.1;
  const X = (x) => ((x - x0) / Math.max(1, x1 - x0)) * 400, Y = (y) => 150 - (y / y1) * 140 - 5;
  svg.innerHTML = series.map((s, i) =>
    `<polyline stroke="${COLORS[i % COLORS.length]}" points="${s.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1] * scale).toFixed(1)}`).join(" ")}"><title>${esc(s.member || s.label)}</title></polyline>` +
    (s.points.length < 3 ? s.points.map((p) => `<circle r="2" fill="${COLORS[i % COLORS.length]}" cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1] * scale).toFixed(1)}"/>`).join("") : "")
  ).join("") + `<text x="4" y="10">max ${y1.toFixed(2)}</text>` +
    series.map((s, i) => `<text x="${4 + i * 80}" y="146" style="fill:${COLORS[i % COLORS.length]}">${esc(s.label || s.member || "cluster")}</text>`).join("");
}

async function series(metric, range, step) {
  const h = await api(`${base()}/metrics/history?metric=${metric}&from=${range}&step=${step}`);
  return h.series;
}

// The etcd mixin's panels, from the stored history. Each chart: an id, a
// caption, a scale for display, and the metrics it plots (with a label
// when it plots more than one).
const MIB = 1024 * 1024;
const ACTIVITY = [
  ["rpc", "gRPC requests/s by method", 1, [["grpc_method_rate"]]],
  ["rpc-failed", "Failed gRPC requests/s by method", 1, [["grpc_method_failed_rate"]]],
  ["watch-streams", "Watch streams open per member", 1, [["watch_streams"]]],
  ["lease-streams", "Lease keep-alive streams open per member", 1, [["lease_streams"]]],
  ["watchers", "Watchers and slow watchers per member", 1, [["watchers", "watchers"], ["slow_watchers", "slow"]]],
  ["pending-events", "Events pending for watchers per member", 1, [["pending_events"]]],
  ["leases", "Leases in the cluster", 1, [["leases"]]],
  ["compaction-lag", "Revisions since the last compaction per member", 1, [["compaction_lag"]]],
  ["rss", "Member memory (RSS, MiB)", 1 / MIB, [["resident_memory_bytes"]]],
  ["cpu", "Member CPU (cores)", 1, [["cpu_cores"]]],
  ["client-traffic", "Client traffic (KiB/s): in, out", 1 / 1024, [["client_received_bytes_rate", "in"], ["client_sent_bytes_rate", "out"]]],
  ["peer-traffic", "Peer traffic (KiB/s): in, out", 1 / 1024, [["peer_received_bytes_rate", "in"], ["peer_sent_bytes_rate", "out"]]],
  ["proposals", "Proposals/s: committed, applied, failed", 1, [["member_proposals_committed_rate", "committed"], ["proposals_applied_rate", "applied"], ["proposals_failed_rate", "failed"]]],
  ["proposals-pending", "Proposals pending per member", 1, [["proposals_pending"]]],
  ["elections", "Leader elections over the last day per member", 1, [["leader_changes_per_day"]]],
  ["peer-rtt", "Peer round trip p99 (ms) per member", 1000, [["peer_round_trip_p99_seconds"]]],
];

function buildActivity() {
  $("#activity-charts").innerHTML = ACTIVITY.map(([id, caption]) =>
    `<figure><figcaption>${esc(caption)}</figcaption><svg id="chart-${id}" viewBox="0 0 400 150" preserveAspectRatio="none"></svg></figure>`).join("");
}

// Fetched only while the section is open: sixteen history reads per refresh.
async function loadActivity(range, step) {
  if (!$("#activity").open) return;
  await Promise.all(ACTIVITY.map(async ([id, , scale, metrics]) => {
    const parts = await Promise.all(metrics.map(async ([metric, label]) =>
      (await series(metric, range, step)).map((s) => ({
        ...s, label: [s.method || s.member || (metrics.length > 1 ? "" : "cluster"), label].filter(Boolean).join(" "),
      }))));
    draw($(`#chart-${id}`), parts.flat(), scale);
  }));
}

async function loadCharts() {
  const range = $("#range").value;
  const step = { "15m": "15s", "1h": "30s", "6h": "3m", "24h": "10m", "7d": "1h" }[range];
  try {
    const [put, lin, rev, db, fsync] = await Promise.all([
      series("probe_put_p99_ms", range, step), series("probe_linearizable_get_p99_ms", range, step),
      series("revision_rate", range, step), series("db_total_size_bytes", range, step), series("wal_fsync_p99_seconds", range, step),
    ]);
    draw($("#chart-latency"), [...put.map((s) => ({ ...s, label: "put" })), ...lin.map((s) => ({ ...s, label: "linearizable get" }))], 1);
    draw($("#chart-throughput"), rev.map((s) => ({ ...s, label: "revisions/s" })), 1);
    draw($("#chart-db"), db, 1 / (1024 * 1024));
    draw($("#chart-fsync"), fsync, 1000);
    await loadActivity(range, step);
    const current = await api(`${base()}/metrics/current`);
    const w = current.metrics_window_seconds;
    $("#metrics-window").textContent = w % 60 === 0 ? `${w / 60} min` : `${w} s`;
  } catch (e) { console.warn(e); }
}

async function loadAlerts() {
  try {
    const a = await api(`/api/v1/alerts`);
    const list = a.alerts || [];
    const canSilence = allowed("POST /api/v1/silences"), canAck = allowed("POST /api/v1/alerts/ack");
    $("#alerts").innerHTML = list.length
      ? list.map((x) => `<li><span class="sev ${esc(x.severity)}">${esc(x.severity)}</span> ${esc(x.alertname)} ${esc(x.cluster || "")} <small>${esc(x.state || "")}</small>` +
        (x.runbook_url ? ` <a class="runbook" href="${esc(x.runbook_url)}">runbook</a>` : "") +
        (canSilence ? `<button type="button" data-silence="${esc(x.cluster)}|${esc(x.alertname)}">Silence 1h</button>` : "") +
        (canAck && x.state === "firing" ? `<button type="button" data-ack="${esc(x.group_key)}">Ack</button>` : "") + `</li>`).join("")
      : `<li class="muted">No active alerts.</li>`;
    const s = await api(`/api/v1/silences`);
    const sl = s.silences || [];
    $("#silences").innerHTML = sl.length ? sl.map((x) => `<li>${esc(JSON.stringify(x.matchers))} until ${new Date(x.ends_at_ms).toLocaleString()}</li>`).join("") : `<li class="muted">No silences.</li>`;
  } catch (e) { $("#alerts").innerHTML = `<li class="muted">${esc(e.message)}</li>`; }
}

async function loadBenchmarks() {
  try {
    const b = await api(`/api/v1/benchmarks`);
    const list = b.benchmarks || [];
    $("#benchmarks").innerHTML = list.length ? list.map((x) => `<li>${esc(x.id)} ${esc(x.workload || "")} <b>${esc(x.state || "")}</b> ${x.throughput != null ? x.throughput.toFixed(0) + " ops/s" : ""} ${x.p99_ms != null ? "p99 " + x.p99_ms.toFixed(2) + " ms" : ""}</li>`).join("") : `<li class="muted">No runs yet.</li>`;
  } catch (e) { $("#benchmarks").innerHTML = `<li class="muted">${esc(e.message)}</li>`; }
}

// The defrag autopilot (maintenance.defrag): its window and rule, and its
// last runs with each member's size before and after.
async function loadDefragRuns() {
  try {
    const d = await api(`${base()}/maintenance/defrag/runs?limit=5`);
    $("#defrag-autopilot").textContent = d.autopilot
      ? `On: window ${d.window}, rule ${d.rule}.`
      : "Off (maintenance.defrag in the configuration).";
    $("#defrag-runs").innerHTML = d.runs.length ? d.runs.map((r) => {
      const members = (r.members || []).map((m) => m.outcome === "defragmented"
        ? `${esc(m.name)} ${bytes(m.db_size_before)} → ${bytes(m.db_size_after)}`
        : `${esc(m.name)} ${esc(m.outcome)}`).join(", ");
      return `<li data-outcome="${esc(r.outcome)}">${new Date(r.at_ms).toLocaleString()} <b>${esc(r.outcome)}</b>` +
        `${r.compacted_to ? ` after compacting to ${r.compacted_to}` : ""}: ${members}${r.error ? ` (${esc(r.error)})` : ""}</li>`;
    }).join("") : `<li class="muted">No runs yet.</li>`;
  } catch (e) { $("#defrag-runs").innerHTML = `<li class="muted">${esc(e.message)}</li>`; }
}

// Replicas (ha): each live replica with the clusters it owns; the card
// stays hidden when one process owns every cluster.
async function loadReplicas() {
  try {
    const d = await api(`/api/v1/replicas`);
    $("#replica-card").hidden = !d.enabled;
    if (!d.enabled) return;
    const owner = d.clusters.find((c) => c.cluster === cluster);
    const rows = d.replicas.map((r) =>
      `<li data-replica="${esc(r.name)}"><b>${esc(r.name)}</b>${r.self ? " (this one)" : ""} <a href="${esc(r.url)}">${esc(r.url)}</a>: ` +
      `${r.clusters.length ? r.clusters.map((c) => (c === cluster ? `<b>${esc(c)}</b>` : esc(c))).join(", ") : "no cluster"}</li>`);
    if (!d.member) rows.unshift(`<li class="warning">This replica is not a member: ${esc(d.problem || "connecting")}</li>`);
    if (owner && !owner.owner) rows.unshift(`<li class="warning">${esc(cluster)} has no owner right now (handover)</li>`);
    $("#replicas").innerHTML = rows.join("");
  } catch (e) { $("#replicas").innerHTML = `<li class="muted">${esc(e.message)}</li>`; }
}

// Backups (backup.schedules) of this cluster: each schedule's last backup,
// last restore drill and failures, then the newest backups with their drill.
let backupSchedules = [];
async function loadBackups() {
  try {
    const d = await api(`/api/v1/backups?limit=50`);
    backupSchedules = d.schedules.filter((s) => s.cluster === cluster);
    const when = (ms) => (ms ? new Date(ms).toLocaleString() : "never");
    $("#backup-schedules").innerHTML = backupSchedules.length ? backupSchedules.map((s) =>
      `<li data-schedule="${esc(s.schedule)}" class="${s.unverified || s.last_error ? "warning" : ""}"><b>${esc(s.schedule)}</b> to ${esc(s.target)}: ` +
      `last backup ${when(s.last_success_ms)}${s.size_bytes ? ` (${bytes(s.size_bytes)})` : ""}, last verified ${when(s.last_verified_ms)}` +
      `${s.failures ? `, ${s.failures} failed` : ""}${s.verify_failures ? `, ${s.verify_failures} failed drills` : ""}` +
      `${s.unverified ? `<br>UNVERIFIED ${esc(s.unverified.name)}: ${esc(s.unverified.error)}` : ""}` +
      `${s.last_error ? `<br>Last error: ${esc(s.last_error)}` : ""}</li>`).join("")
      : `<li class="muted">No backup schedule for this cluster (backup.schedules; docs/backup.md).</li>`;
    const names = backupSchedules.map((s) => s.schedule);
    const list = d.backups.filter((b) => names.includes(b.schedule)).slice(0, 8);
    $("#backups").innerHTML = list.length ? list.map((b) => {
      const v = b.verification;
      const drill = !v ? "not drilled" : v.verified
        ? `verified in ${(v.duration_ms / 1000).toFixed(1)} s (${v.key_count} keys, revision ${v.revision})`
        : `DRILL FAILED: ${esc(v.error)}`;
      return b.outcome === "saved"
        ? `<li data-backup="${esc(b.name)}">${new Date(b.at_ms).toLocaleString()} <b>${esc(b.name)}</b> ${bytes(b.manifest && b.manifest.size)}: ${drill}</li>`
        : `<li class="warning">${new Date(b.at_ms).toLocaleString()} <b>failed</b> (${esc(b.schedule)}): ${esc(b.error)}</li>`;
    }).join("") : `<li class="muted">No backups yet.</li>`;
    $("#backup-now").disabled = backupSchedules.length === 0;
  } catch (e) { $("#backup-schedules").innerHTML = `<li class="muted">${esc(e.message)}</li>`; }
}

$("#backup-now").addEventListener("click", async () => {
  const out = $("#backup-result");
  const s = backupSchedules.length === 1 ? backupSchedules[0].schedule
    : prompt(`Which schedule? (${backupSchedules.map((x) => x.schedule).join(", ")})`);
  if (!s) return;
  out.textContent = `Backup of ${s}: running…`;
  try {
    const r = await post(`/api/v1/backups`, { schedule: s });
    const v = r.verification;
    out.textContent = `Saved ${r.name} (${bytes(r.manifest.size)})` + (v ? (v.verified ? ", verified by a restore drill." : `; drill failed: ${v.error}`) : ".");
  } catch (e) { out.textContent = `Backup failed: ${e.message}`; }
  loadBackups();
});

$("#alerts").addEventListener("click", async (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  try {
    if (b.dataset.silence) {
      const [c, name] = b.dataset.silence.split("|");
      await post("/api/v1/silences", { matchers: [`cluster=${c}`, `alertname=${name}`], ends_at_ms: Date.now() + 3600e3, comment: "silenced from the dashboard" });
    } else if (b.dataset.ack) {
      await post("/api/v1/alerts/ack", { group_key: b.dataset.ack, comment: "acknowledged from the dashboard" });
    }
  } catch (e) { alert(e.message); }
  loadAlerts();
});

$("#bench-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await post(`/api/v1/benchmarks`, { cluster, workload: f.get("workload"), total: Number(f.get("total")), clients: Number(f.get("clients")) });
  } catch (e) { alert(e.message); }
  loadBenchmarks();
});

// Maintenance: the operator types the cluster's name, as `etcd-monitor ctl` asks on a terminal.
document.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", async () => {
  const out = $("#maintenance-result");
  const typed = prompt(`${b.textContent} on cluster "${cluster}". Type the cluster's name to go ahead:`);
  if (typed !== cluster) { out.textContent = "Cancelled: the name did not match."; return; }
  out.textContent = `${b.textContent}: running…`;
  try {
    // The typed name travels as `confirm`: the API refuses compact and disarm without it.
    const body = ["compact", "alarm-disarm"].includes(b.dataset.action) ? { confirm: typed } : {};
    const r = await post(`${base()}/maintenance/${b.dataset.action}`, body);
    out.textContent = `${b.textContent}: done. ${JSON.stringify(r)}`;
  } catch (e) { out.textContent = `${b.textContent} failed: ${e.message}`; }
  refreshAll();
}));

// Keyspace: one paced scan on demand (GET .../keyspace needs operator and is audited).
$("#keyspace-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const q = new URLSearchParams({ depth: f.get("depth"), top: f.get("top") });
  if (f.get("prefix")) q.set("prefix", f.get("prefix"));
  const summary = $("#keyspace-summary");
  summary.textContent = "Scanning…";
  try {
    const r = await api(`${base()}/keyspace?${q}`);
    summary.textContent = `${r.scanned_keys} keys, ${bytes(r.value_bytes)} of values at revision ${r.revision}, ` +
      `read from ${r.from_leader ? "the leader" : "a follower"} in ${r.requests} requests, ${(r.duration_ms / 1000).toFixed(1)} s` +
      (r.complete ? "" : ` (INCOMPLETE: ${r.stopped})`);
    const rows = (list, cells, empty) => list.length ? list.map((x) => `<tr>${cells(x).map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("")
      : `<tr><td colspan="5" class="muted">${empty}</td></tr>`;
    $("#keyspace-prefixes tbody").innerHTML = rows(r.prefixes, (p) => ["\u00a0\u00a0".repeat(p.depth - 1) + p.prefix, p.keys, bytes(p.key_bytes), bytes(p.value_bytes), `${p.min_mod_revision}..${p.max_mod_revision}`], "No prefixes at this depth.");
    $("#keyspace-top tbody").innerHTML = rows(r.top_keys, (k) => [k.key, bytes(k.value_bytes), k.mod_revision], "No keys.");
    $("#keyspace-resources tbody").innerHTML = rows(r.resources, (x) => [x.resource, x.group, x.namespace || "(cluster)", x.keys, bytes(x.value_bytes)], "No Kubernetes objects (/registry/).");
  } catch (e) { summary.textContent = `Scan failed: ${e.message}`; }
});

// Growth between the two newest stored scans of the prefix (scheduled or from Scan).
$("#keyspace-growth-button").addEventListener("click", async () => {
  const prefix = new FormData($("#keyspace-form")).get("prefix") || "";
  const box = $("#keyspace-growth"), summary = $("#keyspace-summary");
  const signed = (n) => (n < 0 ? "-" : "+") + bytes(Math.abs(n));
  try {
    const g = await api(`${base()}/keyspace/growth?${new URLSearchParams({ prefix })}`);
    summary.textContent = `${signed(g.bytes_delta)} in ${g.hours.toFixed(2)} h (revision ${g.from_revision} to ${g.to_revision})`;
    const changed = g.prefixes.filter((p) => p.bytes_delta !== 0 || p.keys_before !== p.keys_after).slice(0, 20);
    box.querySelector("tbody").innerHTML = changed.length ? changed.map((p) =>
      `<tr><td>${esc(p.prefix)}</td><td>${p.keys_before} → ${p.keys_after}</td><td>${bytes(p.bytes_after)}</td>` +
      `<td>${signed(p.bytes_delta)}</td><td>${signed(p.bytes_per_hour)}/h</td></tr>`).join("")
      : `<tr><td colspan="5" class="muted">No prefix changed.</td></tr>`;
    box.hidden = false;
  } catch (e) { summary.textContent = `Growth: ${e.message}`; box.hidden = true; }
});

// Hot writes: the busiest prefix buckets from the hot-write watch
// (keyspace.hot_writes), refreshed while shown.
let hotTimer = null;
async function loadHot() {
  const box = $("#keyspace-hot"), summary = $("#keyspace-summary");
  try {
    const h = await api(`${base()}/keyspace/hot?window=10s&top=20`);
    if (!h.enabled) {
      summary.textContent = "Hot writes are off: set keyspace.hot_writes.enabled in the monitor's configuration.";
      box.hidden = true;
      return;
    }
    const rate = (n) => n.toFixed(1);
    summary.textContent = `${h.events_total} writes counted since ${new Date(h.since_ms).toLocaleTimeString()}` +
      (h.watching ? "" : ` (NOT WATCHING${h.error ? `: ${h.error}` : ""})`) +
      (h.skipped_revisions ? `; ${h.skipped_revisions} revisions compacted before they were counted` : "");
    box.querySelector("tbody").innerHTML = h.buckets.length ? h.buckets.map((b) =>
      `<tr data-prefix="${esc(b.prefix)}"><td>${esc(b.prefix || "(no /)")}</td><td>${rate(b.writes_per_second)}</td>` +
      `<td>${rate(b.puts_per_second)}</td><td>${rate(b.deletes_per_second)}</td><td>${bytes(b.value_bytes_per_second)}</td></tr>`).join("")
      : `<tr><td colspan="5" class="muted">No writes in the last 10 s.</td></tr>`;
    box.hidden = false;
  } catch (e) { summary.textContent = `Hot writes: ${e.message}`; box.hidden = true; }
}
$("#keyspace-hot-button").addEventListener("click", () => {
  clearInterval(hotTimer);
  loadHot();
  hotTimer = setInterval(() => { if ($("#keyspace-hot").hidden) clearInterval(hotTimer); else loadHot(); }, 5000);
});

async function loadAudit() {
  if (!allowed("GET /api/v1/audit")) return;
  try {
    const a = await api("/api/v1/audit?limit=50");
    $("#audit tbody").innerHTML = a.records.length ? a.records.map((r) =>
      `<tr class="${r.status >= 400 ? "down" : ""}"><td>${new Date(r.at_ms).toLocaleString()}</td><td>${esc(r.principal)}</td><td>${esc(r.role || "")}</td>` +
      `<td>${esc(r.source)}</td><td>${esc(r.method)} ${esc(r.path)}</td><td>${esc(r.cluster || "")}</td><td>${r.status}</td></tr>`).join("")
      : `<tr><td colspan="7" class="muted">Nothing recorded in the last 24 hours.</td></tr>`;
  } catch (e) { $("#audit tbody").innerHTML = `<tr><td colspan="7" class="muted">${esc(e.message)}</td></tr>`; }
}

async function refresh() { await Promise.all([loadMembers(), loadStatus()]); }
async function refreshAll() { await Promise.all([refresh(), loadLeaders(), loadCharts(), loadAlerts(), loadBenchmarks(), loadAudit(), loadDefragRuns(), loadBackups(), loadReplicas()]); }

// Server-sent events read with fetch, so the bearer token can go along
// (EventSource cannot send headers). Reconnects after 2 s.
async function live() {
  const on = {
    health: (d) => { if (d.cluster === cluster) refresh(); },
    leader_changed: () => loadLeaders(),
    metrics: (d) => { if (d.cluster === cluster) loadCharts(); },
  };
  for (;;) {
    try {
      const r = await fetch("/api/v1/events", { headers: headers({ accept: "text/event-stream" }) });
      if (!r.ok || !r.body) throw new Error(r.statusText);
      $("#live").classList.add("on");
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end); buf = buf.slice(end + 2);
          let event = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (on[event] && data) on[event](JSON.parse(data));
        }
      }
    } catch (e) { console.warn("events:", e.message); }
    $("#live").classList.remove("on");
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

$("#cluster").addEventListener("change", (e) => { cluster = e.target.value; refreshAll(); });
$("#range").addEventListener("change", loadCharts);
buildActivity();
$("#activity").addEventListener("toggle", loadCharts);

async function start() {
  try { me = await api("/api/v1/whoami"); } catch (e) { return; } // 401: the sign-in dialog is open
  applyIdentity();
  await loadClusters();
  await refreshAll();
  live();
  setInterval(() => { loadAlerts(); loadBenchmarks(); loadAudit(); }, 10000);
}
start();
