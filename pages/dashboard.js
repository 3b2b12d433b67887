// The live operations page: totals and per-topic rates from /stats, polled
// every second; a topic's live tail over /ws, through the ringcast-client
// package (which reconnects and resumes by itself); a publish form. What
// comes from the server is only ever set as text, never parsed as markup:
// topic names and payloads are user data. `apiKey` comes from
// session-key.js, which runs first.
import { Client } from "./ringcast-client.js";

const POLL_MS = 1000;
// Rows in the topic table; with more topics the busiest are shown.
const MAX_ROWS = 100;
const TAIL_KEEP = 50;
const TAIL_REPLAY = 10;

const $ = (id) => document.getElementById(id);
const count = new Intl.NumberFormat();
const formatRate = (value) =>
  value === null ? "–" : value < 10 ? value.toFixed(1) : count.format(Math.round(value));

function show(id, text, tone) {
  const element = $(id);
  element.textContent = text;
  if (tone !== undefined) {
    element.dataset.tone = tone;
  }
}

// --- totals and topics, from /stats ---------------------------------------

let previous = null;

/** A counter's increase per second; null with no earlier sample or after a restart. */
function perSecond(now, before, seconds) {
  return before === undefined || now < before || seconds <= 0 ? null : (now - before) / seconds;
}

async function poll() {
  try {
    await refresh();
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function refresh() {
  let response;
  try {
    response = await fetch("stats", { headers: apiKey.headers(), cache: "no-store" });
  } catch {
    show("status", "Cannot reach the server; retrying.", "error");
    return;
  }
  if (response.status === 401) {
    show("status", "The server needs an API key: enter it above.", "error");
  } else if (!response.ok) {
    show("status", `/stats answered ${response.status}.`, "error");
  } else {
    render(await response.json(), performance.now());
    show("status", `Live · updated ${new Date().toLocaleTimeString()}`, "ok");
  }
}

function render(stats, time) {
  const before = previous ? previous.stats : { topics: {} };
  const seconds = previous ? (time - previous.time) / 1000 : 0;
  show("connections", count.format(stats.connections));
  show("subscriptions", count.format(stats.subscriptions));
  show("topic-count", count.format(Object.keys(stats.topics).length));
  show("publish-rate", formatRate(perSecond(stats.published, before.published, seconds)));
  show("deliver-rate", formatRate(perSecond(stats.delivered, before.delivered, seconds)));
  show("slow-cuts", count.format(stats.slow_consumer_disconnects));
  show("slow-detail", `${count.format(stats.write_timeouts)} by write timeout`);
  show("dropped", count.format(stats.dropped));
  show("auth-failures", count.format(stats.auth_failures));
  renderCluster(stats.cluster);
  renderTopics(stats.topics, before.topics, seconds);
  previous = { stats, time };
}

function renderCluster(cluster) {
  $("cluster").hidden = !cluster;
  if (cluster) {
    show("backplane", cluster.backplane, cluster.backplane === "connected" ? "ok" : "error");
    const scopes = Object.entries(cluster.scope).map(([what, scope]) => `${what}: ${scope}`);
    show("scope", `Counts cover — ${scopes.join(" · ")}`);
  }
}

// The rows of the topics shown, and their names in order.
let topicRows = new Map();
let shownOrder = "";

/** The table row of a topic shown, made on first use. */
function topicRow(name) {
  let tr = topicRows.get(name);
  if (!tr) {
    tr = document.createElement("tr");
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "topic";
    pick.title = "Tail and publish to this topic";
    pick.textContent = name;
    pick.addEventListener("click", () => chooseTopic(name));
    tr.insertCell().append(pick);
    for (let column = 1; column < 5; column += 1) {
      tr.insertCell().className = "num";
    }
    topicRows.set(name, tr);
  }
  return tr;
}

function renderTopics(topics, before, seconds) {
  const filter = $("filter").value.trim().toLowerCase();
  const rows = Object.entries(topics)
    .filter(([name]) => name.toLowerCase().includes(filter))
    .map(([name, topic]) => ({
      name,
      ...topic,
      rate: perSecond(topic.messages, before[name]?.messages, seconds),
    }));
  // The busiest rows, listed by name so they do not jump around.
  const shown = rows
    .sort((a, b) => (b.rate ?? 0) - (a.rate ?? 0) || b.messages - a.messages)
    .slice(0, MAX_ROWS)
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const row of shown) {
    const cells = topicRow(row.name).cells;
    const delivered = row.rate === null ? null : row.rate * row.subscribers;
    cells[1].textContent = count.format(row.subscribers);
    cells[2].textContent = count.format(row.messages);
    cells[3].textContent = formatRate(row.rate);
    cells[4].textContent = formatRate(delivered);
  }
  const note =
    shown.length < rows.length
      ? `Showing the ${shown.length} busiest of ${count.format(rows.length)} topics.`
      : "";
  show("topics-note", note);
  // Rows are moved only when the set shown changes, so a focused or
  // selected row stays so across refreshes.
  const order = shown.map((row) => row.name);
  if (order.join("\n") !== shownOrder) {
    shownOrder = order.join("\n");
    topicRows = new Map(order.map((name) => [name, topicRow(name)]));
    $("topics").tBodies[0].replaceChildren(...topicRows.values());
    $("topic-names").replaceChildren(...order.map((name) => new Option("", name)));
  }
}

function chooseTopic(name) {
  $("tail-topic").value = name;
  $("publish-topic").value = name;
}

// --- live tail, over /ws ---------------------------------------------------

/** The client of the tail shown, if any. */
let tail = null;

function startTail(topic) {
  stopTail();
  const url = new URL("ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const client = new Client(url.href, { apiKey: apiKey.get() || undefined });
  tail = client;
  $("tail").replaceChildren();
  $("tail-stop").disabled = false;
  client.on("state", (state) => {
    if (state === "connecting") {
      show("tail-status", `Connecting to tail ${topic}…`, "");
    } else if (state === "disconnected") {
      // A refused upgrade (a wrong key, say) looks like a lost connection.
      show("tail-status", "Not connected (lost, or refused: check the API key); retrying…", "error");
    }
  });
  let resumed = false;
  client.subscribe(topic, {
    lastN: TAIL_REPLAY,
    onEvent: addEvent,
    onRecovery: ({ recovered }) => {
      const note = !resumed
        ? `up to ${TAIL_REPLAY} recent events, then live ones.`
        : recovered
          ? "reconnected, nothing missed."
          : "reconnected; events published meanwhile were lost.";
      show("tail-status", `Tailing ${topic}: ${note}`, recovered ? "ok" : "error");
      resumed = true;
    },
    onError: (error) => {
      if (error.code === "TOPIC_DELETED" || (resumed && error.code === "TOPIC_NOT_FOUND")) {
        show("tail-status", `Topic ${topic} was deleted; waiting for it to exist again.`, "error");
      } else {
        stopTail();
        show("tail-status", `${error.code}: ${error.message}`, "error");
      }
    },
  });
}

function stopTail() {
  if (tail) {
    tail.close();
    tail = null;
    $("tail-stop").disabled = true;
    show("tail-status", "Not subscribed.", "");
  }
}

function addEvent(event) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `#${event.seq} · ${new Date(event.ts).toLocaleTimeString()}`;
  const payload = document.createElement("code");
  payload.textContent = JSON.stringify(event.payload);
  const item = document.createElement("li");
  item.append(meta, payload);
  const list = $("tail");
  list.prepend(item);
  while (list.children.length > TAIL_KEEP) {
    list.lastChild.remove();
  }
}

// --- publish, over REST ------------------------------------------------------

// crypto.randomUUID exists only in secure contexts (https, localhost); a
// dashboard opened over plain http from another machine has getRandomValues.
function uuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return [
    hex.slice(0, 8),
    hex.slice(8, 12),
    hex.slice(12, 16),
    hex.slice(16, 20),
    hex.slice(20),
  ].join("-");
}

async function publish(topic, text) {
  try {
    JSON.parse(text);
  } catch (err) {
    show("publish-result", `The payload is not JSON: ${err.message}`, "error");
    return;
  }
  try {
    // The payload goes as typed: a parse and re-encode would round numbers.
    const response = await fetch(`topics/${encodeURIComponent(topic)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...apiKey.headers() },
      body: `{"id":${JSON.stringify(uuid())},"payload":${text}}`,
    });
    const body = await response.json();
    if (response.ok) {
      show("publish-result", `Published to ${body.topic} as #${body.seq}.`, "ok");
    } else {
      show(
        "publish-result",
        `${response.status} ${body.error.code}: ${body.error.message}`,
        "error",
      );
    }
  } catch (err) {
    show("publish-result", `Cannot reach the server: ${err.message}`, "error");
  }
}

$("tail-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startTail($("tail-topic").value.trim());
});
$("tail-stop").addEventListener("click", stopTail);
$("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  publish($("publish-topic").value.trim(), $("publish-payload").value);
});
poll();
