// The status page: members (every second), this member's throughput and fsync time (from
// /metrics), a key browser and the live event stream of a prefix. Read-only; with access
// control on it asks for a login and sends the token with every request.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("nacos-token");

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

class LoginNeeded extends Error {}

async function api(path) {
  const r = await fetch(path, { headers: headers() });
  if (r.status === 401) {
    showLogin(true);
    throw new LoginNeeded("log in");
  }
  if (!r.ok) {
    let msg = r.status + "";
    try { msg = (await r.json()).message || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function showLogin(on) {
  $("login-section").hidden = !on;
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const r = await fetch("/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: f.get("user"), password: f.get("password") }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    $("login-error").textContent = body.message || ("login failed: " + r.status);
    return;
  }
  token = body.token;
  sessionStorage.setItem("nacos-token", token);
  $("login-error").textContent = "";
  showLogin(false);
  refresh();
  listKeys();
  startWatch();
});

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "-" : String(text);
  row.appendChild(td);
  return td;
}

async function refreshMembers() {
  const members = await (await api("/ui/api/members")).json();
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  let leaders = 0, down = 0;
  for (const m of members) {
    const tr = document.createElement("tr");
    tr.dataset.addr = m.addr;
    const leader = m.reachable && m.role === "LEADER";
    tr.className = leader ? "leader" : (m.reachable ? "" : "unreachable");
    tr.dataset.role = m.reachable ? m.role : "UNREACHABLE";
    const name = cell(tr, m.addr);
    if (leader) {
      leaders++;
      const b = document.createElement("span");
      b.className = "badge";
      b.textContent = "leader";
      name.appendChild(b);
    }
    if (!m.reachable) down++;
    cell(tr, m.reachable ? m.role : "unreachable").className = "role";
    cell(tr, m.term);
    cell(tr, m.commit_index);
    cell(tr, m.applied_index);
    cell(tr, m.lag);
    cell(tr, m.last_contact_ms === null || m.last_contact_ms === undefined ? "-" : m.last_contact_ms + " ms");
    if (!m.reachable) tr.title = m.error || "";
    body.appendChild(tr);
  }
  const h = $("health");
  const ok = leaders === 1 && down === 0;
  h.className = ok ? "" : "bad";
  h.textContent = ok ? "healthy" : (leaders === 0 ? "no leader" : "degraded") + (down ? ": " + down + " unreachable" : "");
}

const history = { rate: [], fsync: [] };
let last = null;

function sample(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

function spark(id, values) {
  const max = Math.max(1e-9, ...values);
  const pts = values.map((v, i) => (i * 120 / 119).toFixed(1) + "," + (30 - 28 * v / max).toFixed(1));
  document.querySelector("#" + id + " polyline").setAttribute("points", pts.join(" "));
}

async function refreshMetrics() {
  const text = await (await fetch("/metrics")).text();
  const now = {
    t: performance.now(),
    applied: sample(text, "nacos_raft_applied_index"),
    fsyncSum: sample(text, "nacos_raft_log_fsync_duration_seconds_sum"),
    fsyncCount: sample(text, "nacos_raft_log_fsync_duration_seconds_count"),
  };
  if (last) {
    const dt = (now.t - last.t) / 1000;
    const rate = dt > 0 ? Math.max(0, (now.applied - last.applied) / dt) : 0;
    const n = now.fsyncCount - last.fsyncCount;
    const fsync = n > 0 ? 1000 * (now.fsyncSum - last.fsyncSum) / n : 0;
    for (const [k, v] of [["rate", rate], ["fsync", fsync]]) {
      history[k].push(v);
      if (history[k].length > 120) history[k].shift();
    }
    $("rate").textContent = rate.toFixed(0);
    $("fsync").textContent = fsync.toFixed(2);
    spark("spark-rate", history.rate);
    spark("spark-fsync", history.fsync);
  }
  last = now;
}

async function refresh() {
  try {
    await refreshMembers();
    await refreshMetrics();
  } catch (e) {
    if (!(e instanceof LoginNeeded)) {
      $("health").className = "bad";
      $("health").textContent = "this member does not answer: " + e.message;
    }
  }
}

async function listKeys(ev) {
  if (ev) ev.preventDefault();
  const prefix = $("prefix").value;
  try {
    const rows = await (await api("/v1/datums?prefix=" + encodeURIComponent(prefix))).json();
    const ul = $("keys");
    ul.replaceChildren();
    for (const r of rows.slice(0, 500)) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = r.key;
      b.dataset.key = r.key;
      b.addEventListener("click", () => showDatum(r.key));
      li.appendChild(b);
      ul.appendChild(li);
    }
  } catch (e) {
    if (!(e instanceof LoginNeeded)) $("keys").textContent = "cannot list: " + e.message;
  }
}

async function showDatum(key) {
  const d = await (await api("/v1/datum?key=" + encodeURIComponent(key))).json();
  const box = $("datum");
  box.replaceChildren();
  const p = document.createElement("p");
  p.textContent = d.key + " — timestamp " + d.timestamp + ", index " + d.index;
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(d.value, null, 2);
  box.append(p, pre);
}

let watching = null;

async function startWatch(ev) {
  if (ev) ev.preventDefault();
  if (watching) watching.abort();
  const ctl = new AbortController();
  watching = ctl;
  const prefix = $("watch-prefix").value;
  const list = $("events");
  list.replaceChildren();
  let from = null;
  while (!ctl.signal.aborted) {
    try {
      const q = "/v1/watch?prefix=" + encodeURIComponent(prefix) + (from ? "&from_index=" + from : "");
      const r = await fetch(q, { headers: headers(), signal: ctl.signal });
      if (r.status === 401) { showLogin(true); return; }
      if (!r.ok || !r.body) throw new Error("watch refused: " + r.status);
      $("watch-state").textContent = "watching";
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const e = JSON.parse(line);
          if (e.event === "CHANGE" || e.event === "DELETE") {
            from = e.index + 1;
            const li = document.createElement("li");
            li.dataset.key = e.key;
            li.textContent = e.event + " " + e.key + " @" + e.index + (e.event === "CHANGE" ? " = " + JSON.stringify(e.value) : "");
            list.prepend(li);
            while (list.children.length > 100) list.lastChild.remove();
          }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      $("watch-state").textContent = "reconnecting: " + e.message;
    }
    if (!ctl.signal.aborted) {
      $("watch-state").textContent = "reconnecting";
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
}

$("browse").addEventListener("submit", listKeys);
$("watch").addEventListener("submit", startWatch);
const params = new URLSearchParams(location.search);
$("prefix").value = params.get("prefix") || "";
$("watch-prefix").value = params.get("watch") || "";
refresh();
listKeys();
startWatch();
setInterval(refresh, 1000);
