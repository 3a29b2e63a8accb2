// daz-actors dashboard: the small amount of script the pages need (no library).
// Overview: draws the per-minute chart and refreshes the counts. Item: follows an item
// until it finishes. Tree: renders the tree and the rooms from a server-sent event stream.
"use strict";

(function () {
  const refreshMs = Number(document.body.dataset.refreshMs || 1000);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function readJson(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function ago(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) return "-";
    const s = Math.max(0, Date.now() / 1000 - epochSeconds);
    if (s < 60) return s.toFixed(0) + " s ago";
    if (s < 3600) return (s / 60).toFixed(0) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }

  // --- overview -------------------------------------------------------------------------

  function drawChart(canvas, series) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 20;
    ctx.clearRect(0, 0, w, h);
    const peak = Math.max(1, ...series.map((m) => m.completed + m.failed));
    const step = (w - pad) / Math.max(1, series.length);
    ctx.fillStyle = "#888";
    ctx.font = "11px sans-serif";
    ctx.fillText(String(peak), 0, 10);
    ctx.fillText("0", 0, h - 2);
    series.forEach((m, i) => {
      const x = pad + i * step;
      const okH = ((h - 14) * m.completed) / peak;
      const badH = ((h - 14) * m.failed) / peak;
      ctx.fillStyle = "#2e9d52";
      ctx.fillRect(x, h - okH, Math.max(1, step - 1), okH);
      ctx.fillStyle = "#d0433a";
      ctx.fillRect(x, h - okH - badH, Math.max(1, step - 1), badH);
    });
    canvas.dataset.points = String(series.length);
    canvas.dataset.total = String(series.reduce((t, m) => t + m.completed + m.failed, 0));
  }

  function updateOverview(data) {
    document.getElementById("total").textContent = data.total + " items";
    for (const [status, n] of data.by_status) {
      const cell = document.querySelector('td[data-status="' + status + '"]');
      if (cell) cell.textContent = String(n);
    }
    drawChart(document.getElementById("chart"), data.series);
  }

  function startOverview() {
    const data = readJson("overview-data");
    if (!data) return;
    updateOverview(data);
    // the server says when to ask again (longer when its counts took long)
    let wait = data.refresh_ms;
    const tick = async () => {
      try {
        const reply = await fetch("/api/overview", { credentials: "same-origin" });
        if (reply.ok) {
          const fresh = await reply.json();
          updateOverview(fresh);
          wait = fresh.refresh_ms;
        }
      } catch (e) { /* the next tick tries again */ }
      setTimeout(tick, wait);
    };
    setTimeout(tick, wait);
  }

  // --- item -----------------------------------------------------------------------------

  const FINAL = ["completed", "failed", "dead_letter"];

  function startItem() {
    const live = readJson("item-live");
    if (!live || FINAL.includes(live.status)) return;
    const timer = setInterval(async () => {
      try {
        const reply = await fetch("/api/items/" + live.id, { credentials: "same-origin" });
        if (!reply.ok) return;
        const now = await reply.json();
        if (now.status !== live.status) {
          clearInterval(timer);
          location.reload();
        }
      } catch (e) { /* try again */ }
    }, refreshMs);
  }

  // --- tree -----------------------------------------------------------------------------

  function treeRows(body, nodes, depth) {
    for (const n of nodes) {
      const row = el("tr", { "data-path": n.path, class: "state-" + n.state });
      const name = el("td", { class: "name" }, n.name);
      name.style.paddingLeft = 0.4 + depth * 1.2 + "em";
      row.append(
        name,
        el("td", { class: "state" }, n.state),
        el("td", { class: "restarts num" }, n.restarts),
        el("td", { class: "reasons" },
          n.restarts_by_reason.map((p) => p[0] + " " + p[1]).join(", ") || "-"),
        el("td", { class: "backoff" },
          n.backoff_remaining === null ? "-" : n.backoff_remaining.toFixed(1) + " s"),
        el("td", { class: "mailbox num" },
          n.mailbox.capacity ? n.mailbox.depth + " / " + n.mailbox.capacity : "-"),
        el("td", { class: "high-water num" }, n.mailbox.capacity ? n.mailbox.high_water : "-"),
        el("td", { class: "redelivered num" }, n.redelivered),
        el("td", { class: "err" }, n.last_error || ""),
      );
      body.append(row);
      if (n.children) treeRows(body, n.children, depth + 1);
    }
  }

  function renderTree(state) {
    const body = document.getElementById("tree-body");
    body.replaceChildren();
    if (state.root) {
      const row = el("tr", { "data-path": "", class: "root" });
      row.append(el("td", { class: "name" }, state.root.name),
        el("td", { class: "state" },
          state.root.stopping ? "stopping" : state.root.running ? "running" : "stopped"));
      for (let i = 0; i < 7; i++) row.append(el("td"));
      body.append(row);
    }
    treeRows(body, state.tree, 1);
    const rooms = document.getElementById("rooms-body");
    rooms.replaceChildren();
    for (const r of state.rooms) {
      const lim = r.limiter;
      const row = el("tr", { "data-channel": r.channel });
      row.append(
        el("td", {}, r.channel),
        el("td", { class: "room-status" }, r.status + (r.reason ? " (" + r.reason + ")" : "")),
        el("td", {}, ago(r.since)),
        el("td", {}, ago(r.last_event)),
        el("td", { class: "num" }, r.reconnects),
        el("td", { class: "num" }, r.received + " / " + r.sent),
        el("td", {},
          (lim.can_speak ? "can speak" : "silent: " + lim.reason) +
          "; " + lim.count + "/" + lim.burst + " burst, " + lim.sustained + "/s" +
          (lim.wait > 0 ? ", next in " + lim.wait.toFixed(1) + " s" : "") +
          "; " + lim.waiting + " waiting, " + lim.refused + " refused"),
      );
      rooms.append(row);
    }
    if (!state.rooms.length) {
      const row = el("tr");
      row.append(el("td", { colspan: "7", class: "muted" }, "no rooms"));
      rooms.append(row);
    }
  }

  function startTree() {
    const first = readJson("tree-data");
    if (!first) return;
    renderTree(first);
    const status = document.getElementById("live");
    const source = new EventSource("/tree/events");
    source.onopen = () => { status.textContent = "live"; };
    source.onerror = () => { status.textContent = "reconnecting…"; };
    source.onmessage = (event) => {
      renderTree(JSON.parse(event.data));
      status.textContent = "live";
      status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    startOverview();
    startItem();
    startTree();
  });
})();
