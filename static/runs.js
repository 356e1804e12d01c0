// Cronos run pages: live output over a websocket, auto-scroll, progress against the usual
// duration, and the notifications bell (live pushes, desktop notifications).
//
// Output is never parsed as HTML: text goes into the page through textContent only, and ANSI
// colour codes become <span class="ansi-..."> with classes from a fixed table, by the same
// rules as runs/ansi.py on the server.
"use strict";

(() => {
  if (window.cronosRuns) return; // loaded by a page and by the top bar: set up once
  window.cronosRuns = {};

  // --- ANSI (mirrors runs/ansi.py) ----------------------------------------------------------

  const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
  // An escape sequence (CSI, OSC, two-character) or a control character other than \t \n \r.
  const TOKEN =
    /\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]/g;
  // A sequence cut off at the end of a chunk: kept for the next one.
  const PARTIAL = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[ -/]*)?$/;
  const MAX_PENDING = 256;

  function blankState() {
    return { bold: false, dim: false, italic: false, underline: false, fg: "", bg: "", pending: "" };
  }

  function knownColour(name) {
    return COLOURS.includes(name.replace(/^bright-/, ""));
  }

  function stateFromClasses(text) {
    const state = blankState();
    for (const name of (text || "").split(/\s+/)) {
      if (name === "ansi-bold") state.bold = true;
      else if (name === "ansi-dim") state.dim = true;
      else if (name === "ansi-italic") state.italic = true;
      else if (name === "ansi-underline") state.underline = true;
      else if (name.startsWith("ansi-bg-") && knownColour(name.slice(8))) state.bg = name.slice(8);
      else if (name.startsWith("ansi-") && knownColour(name.slice(5))) state.fg = name.slice(5);
    }
    return state;
  }

  function classesOf(state) {
    const names = [];
    if (state.bold) names.push("ansi-bold");
    if (state.dim) names.push("ansi-dim");
    if (state.italic) names.push("ansi-italic");
    if (state.underline) names.push("ansi-underline");
    if (state.fg) names.push(`ansi-${state.fg}`);
    if (state.bg) names.push(`ansi-bg-${state.bg}`);
    return names;
  }

  function applySgr(state, params) {
    const codes = params ? params.replace(/:/g, ";").split(";") : ["0"];
    const values = codes.map((code) => (/^\d+$/.test(code) ? parseInt(code, 10) : 0));
    let s = { ...state };
    for (let i = 0; i < values.length; ) {
      const code = values[i++];
      if (code === 0) s = { ...blankState(), pending: s.pending };
      else if (code === 1) s.bold = true;
      else if (code === 2) s.dim = true;
      else if (code === 3) s.italic = true;
      else if (code === 4) s.underline = true;
      else if (code === 22) s.bold = s.dim = false;
      else if (code === 23) s.italic = false;
      else if (code === 24) s.underline = false;
      else if (code >= 30 && code <= 37) s.fg = COLOURS[code - 30];
      else if (code === 39) s.fg = "";
      else if (code >= 40 && code <= 47) s.bg = COLOURS[code - 40];
      else if (code === 49) s.bg = "";
      else if (code >= 90 && code <= 97) s.fg = `bright-${COLOURS[code - 90]}`;
      else if (code >= 100 && code <= 107) s.bg = `bright-${COLOURS[code - 100]}`;
      else if (code === 38 || code === 48 || code === 58) {
        // 256-colour and true colour: not shown, their arguments skipped.
        if (values[i] === 5) i += 2;
        else if (values[i] === 2) i += 4;
      }
    }
    return s;
  }

  // Append `text` to `parent` as text nodes and spans; returns the state to carry on with.
  function appendAnsi(parent, text, state) {
    text = (state.pending || "") + text;
    let pending = "";
    const partial = PARTIAL.exec(text);
    if (partial) {
      if (text.length - partial.index <= MAX_PENDING) pending = text.slice(partial.index);
      text = text.slice(0, partial.index);
    }
    let s = { ...state, pending: "" };
    const put = (piece) => {
      if (!piece) return;
      const classes = classesOf(s);
      if (classes.length) {
        const span = document.createElement("span");
        span.className = classes.join(" ");
        span.textContent = piece;
        parent.appendChild(span);
      } else {
        parent.appendChild(document.createTextNode(piece));
      }
    };
    let position = 0;
    TOKEN.lastIndex = 0;
    for (let match = TOKEN.exec(text); match; match = TOKEN.exec(text)) {
      put(text.slice(position, match.index));
      position = TOKEN.lastIndex;
      if (match[2] === "m") s = applySgr(s, match[1]);
    }
    put(text.slice(position));
    s.pending = pending;
    return s;
  }

  window.cronosRuns.appendAnsi = appendAnsi;
  window.cronosRuns.blankState = blankState;

  // --- Live output --------------------------------------------------------------------------

  // Live output kept in the page; beyond it the oldest is dropped (1 GB of output must not
  // take the browser down) and "load earlier output" fetches it again on demand.
  const MAX_LIVE_CHARS = 2_000_000;

  function wsUrl(path, query) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}?${query}`;
  }

  function backoff(attempt) {
    const base = Math.min(10000, 500 * 2 ** Math.max(0, attempt - 1));
    return base * (0.8 + Math.random() * 0.4);
  }

  function startRunLog(log) {
    const pre = log.querySelector("pre.output");
    const status = document.querySelector("[data-live-status]");
    const toggle = document.querySelector("[data-autoscroll]");
    let lastSeq = parseInt(log.dataset.after, 10);
    if (Number.isNaN(lastSeq)) lastSeq = -1;
    let state = stateFromClasses(log.dataset.ansi);
    try {
      state.pending = JSON.parse(`"${log.dataset.pending || ""}"`);
    } catch (_) {
      state.pending = "";
    }
    let follow = true;
    let socket = null;
    let attempts = 0;
    let connects = 0;
    let ended = !(log.dataset.live === "1");
    let liveChars = 0;

    const setStatus = (text) => {
      if (status) status.textContent = text;
    };
    const scrollToEnd = () => {
      if (follow) log.scrollTop = log.scrollHeight;
    };

    // Remove the start of a live chunk up to and including its first line break.
    function dropPartialLine(group) {
      if (!group.textContent.includes("\n")) return;
      const walker = document.createTreeWalker(group, NodeFilter.SHOW_TEXT);
      const emptied = [];
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.data.indexOf("\n");
        if (at < 0) {
          emptied.push(node);
          liveChars -= node.data.length;
          continue;
        }
        liveChars -= at + 1;
        node.data = node.data.slice(at + 1);
        break;
      }
      emptied.forEach((node) => node.remove());
    }

    function trim() {
      // Drop the oldest chunks, and point "load earlier output" at what is left. What is kept
      // starts where the server starts a window from that chunk (runpage.output_window): at
      // the chunk if the one before ended a line or it holds no line break, else after its
      // first line break; so the earlier output, loaded again, joins it exactly.
      const groups = pre.querySelectorAll(".chunks");
      let index = 0;
      let endedLine = true;
      while (liveChars > MAX_LIVE_CHARS / 2 && index < groups.length - 1) {
        liveChars -= groups[index].textContent.length;
        endedLine = groups[index].textContent.endsWith("\n");
        groups[index].remove();
        index += 1;
      }
      const first = pre.querySelector(".chunks");
      if (!first || first.dataset.from === undefined) return;
      // A window rendered by the server starts at a line already; a live chunk may not.
      if (index > 0 && !endedLine && first.classList.contains("live")) dropPartialLine(first);
      let link = pre.querySelector("[data-earlier]");
      if (!link) {
        link = document.createElement("a");
        link.className = "earlier";
        link.dataset.earlier = "";
        // The line break goes with the link (templates/runs/output_window.html).
        link.textContent = "↑ Load earlier output\n";
        link.setAttribute("hx-target", "this");
        link.setAttribute("hx-swap", "outerHTML");
        pre.insertBefore(link, pre.firstChild);
      }
      const url = `/runs/${log.dataset.run}/output/?before=${first.dataset.from}`;
      link.href = url;
      link.setAttribute("hx-get", url);
      if (window.htmx) window.htmx.process(link);
    }

    function append(seq, text) {
      const group = document.createElement("span");
      group.className = "chunks live";
      group.dataset.from = String(seq);
      group.dataset.to = String(seq);
      state = appendAnsi(group, text, state);
      pre.appendChild(group);
      liveChars += text.length;
      if (liveChars > MAX_LIVE_CHARS) trim();
      const empty = log.querySelector(".empty-output");
      if (empty) empty.remove();
      scrollToEnd();
    }

    function refreshSummary() {
      const summary = document.getElementById("run-summary");
      if (summary && window.htmx) window.htmx.trigger(summary, "run-ended");
    }

    function connect() {
      connects += 1;
      const ws = new WebSocket(wsUrl(log.dataset.ws, `after=${lastSeq}`));
      socket = ws;
      ws.onopen = () => {
        attempts = 0;
        setStatus("live");
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        if (message.type === "chunk") {
          // A chunk already shown (a reconnect racing a late message) is not shown twice.
          if (message.seq <= lastSeq) return;
          append(message.seq, message.text);
          lastSeq = message.seq;
          log.dataset.after = String(lastSeq);
        } else if (message.type === "end") {
          ended = true;
          setStatus(`ended: ${message.state.replace(/_/g, " ")}`);
          ws.close();
          refreshSummary();
        }
      };
      ws.onclose = (event) => {
        if (socket === ws) socket = null;
        if (ended) return;
        // The server closes with these when the session, account or permission ends
        // (cronos_site/web/sockets.py): reconnecting would only be refused again.
        if (event.code === 4401) {
          setStatus("signed out — reload to sign in");
          return;
        }
        if (event.code === 4403) {
          setStatus("not allowed to follow this run");
          return;
        }
        attempts += 1;
        const delay = backoff(attempts);
        setStatus(`reconnecting in ${(delay / 1000).toFixed(1)} s…`);
        setTimeout(connect, delay);
      };
    }

    if (toggle) {
      toggle.addEventListener("click", () => {
        follow = !follow;
        toggle.setAttribute("aria-pressed", follow ? "true" : "false");
        toggle.textContent = follow ? "Pause auto-scroll" : "Resume auto-scroll";
        scrollToEnd();
      });
    }

    // Loading earlier output grows the log above what is in view: keep the view where it was.
    let distanceFromEnd = null;
    log.addEventListener("htmx:beforeSwap", () => {
      distanceFromEnd = log.scrollHeight - log.scrollTop;
    });
    log.addEventListener("htmx:afterSettle", () => {
      if (distanceFromEnd !== null) log.scrollTop = log.scrollHeight - distanceFromEnd;
      distanceFromEnd = null;
    });

    // A link to a line (a search result: #line-<chunk>-<line>) shows that line, and the log
    // stops following new output so that it stays in view.
    const hit = log.querySelector("[data-hit]");
    if (hit) {
      follow = false;
      if (toggle) {
        toggle.setAttribute("aria-pressed", "false");
        toggle.textContent = "Resume auto-scroll";
      }
      hit.scrollIntoView({ block: "center" });
    } else {
      log.scrollTop = log.scrollHeight;
    }
    // For tests and the curious: what the page has seen, and a way to drop the connection.
    window.cronosRunLog = {
      get lastSeq() {
        return lastSeq;
      },
      get connects() {
        return connects;
      },
      get following() {
        return follow;
      },
      get ended() {
        return ended;
      },
      drop() {
        if (socket) socket.close();
      },
    };
    if (!ended) connect();
  }

  // --- Progress against the usual duration ---------------------------------------------------

  function formatSeconds(total) {
    const seconds = Math.max(0, Math.round(total));
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function tickProgress() {
    document.querySelectorAll("[data-progress]").forEach((box) => {
      // The server's clock minus the browser's, from when the server rendered the bar.
      if (box.dataset.skew === undefined) {
        const now = parseInt(box.dataset.now, 10);
        box.dataset.skew = String(Number.isNaN(now) ? 0 : now - Date.now());
      }
      const skew = parseInt(box.dataset.skew, 10);
      const started = parseInt(box.dataset.started, 10);
      const usual = parseFloat(box.dataset.usual);
      const elapsed = (Date.now() + skew - started) / 1000;
      const bar = box.querySelector(".progress-bar");
      const text = box.querySelector(".progress-text");
      if (usual > 0) {
        const share = Math.min(1, elapsed / usual);
        if (bar) bar.style.width = `${(share * 100).toFixed(1)}%`;
        box.classList.toggle("over", elapsed > usual);
        box.setAttribute("aria-valuenow", String(Math.round(share * 100)));
        if (text) {
          text.textContent =
            elapsed > usual
              ? `${formatSeconds(elapsed)} elapsed: longer than the usual ${formatSeconds(usual)}`
              : `${formatSeconds(elapsed)} of usually ${formatSeconds(usual)}`;
        }
      } else {
        box.classList.add("unknown");
        if (text) text.textContent = `${formatSeconds(elapsed)} elapsed (no usual duration yet)`;
      }
    });
  }

  // --- Notifications ------------------------------------------------------------------------

  function startNotifications(menu) {
    const enable = menu.querySelector("[data-desktop-enable]");
    const count = () => document.getElementById("notif-count");
    let after = null;
    let attempts = 0;
    const received = [];
    window.cronosNotifications = { received, desktop: 0 };

    const supported = "Notification" in window;
    const showEnable = () => {
      if (enable) enable.hidden = !(supported && Notification.permission === "default");
    };
    showEnable();
    if (enable) {
      enable.addEventListener("click", async () => {
        if (!supported) return;
        await Notification.requestPermission();
        showEnable();
      });
    }

    function refresh() {
      const panel = document.getElementById("notif-panel");
      if (panel && window.htmx) {
        window.htmx.ajax("GET", panel.getAttribute("hx-get"), { target: panel, swap: "innerHTML" });
      }
    }

    function desktop(message) {
      if (!supported || Notification.permission !== "granted") return;
      const shown = new Notification(message.title, {
        body: message.body || "",
        tag: `cronos-${message.id}`,
      });
      window.cronosNotifications.desktop += 1;
      shown.onclick = () => {
        window.focus();
        if (message.run) location.href = `/runs/${message.run}/`;
      };
    }

    function connect() {
      const ws = new WebSocket(wsUrl(menu.dataset.ws, `after=${after}`));
      ws.onopen = () => {
        attempts = 0;
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        if (message.type !== "notification" || message.id <= after) return;
        after = message.id;
        received.push(message);
        const badge = count();
        if (badge) {
          const unread = parseInt(badge.dataset.unread || "0", 10) + 1;
          badge.dataset.unread = String(unread);
          badge.textContent = String(unread);
          badge.hidden = false;
        }
        desktop(message);
        refresh();
        // Pages that list what a notification is about (the approvals page) refresh at once.
        if (window.htmx) window.htmx.trigger(document.body, "cronos-notification", { kind: message.kind });
      };
      ws.onclose = (event) => {
        // Signed out or no longer allowed (cronos_site/web/sockets.py): say so, do not retry.
        if (event.code === 4401 || event.code === 4403) {
          const panel = document.getElementById("notif-panel");
          if (panel) {
            const note = document.createElement("p");
            note.className = "muted small";
            note.dataset.socketClosed = String(event.code);
            note.textContent =
              event.code === 4401
                ? "Signed out — reload to sign in."
                : "Not allowed to see notifications any more.";
            panel.replaceChildren(note);
          }
          return;
        }
        attempts += 1;
        setTimeout(connect, backoff(attempts));
      };
    }

    // Connect once the panel has said which notification is the latest, so that a push is
    // never one the person has already been shown.
    document.body.addEventListener("htmx:afterSwap", (event) => {
      if (after !== null || event.detail.target.id !== "notif-panel") return;
      const list = event.detail.target.querySelector("[data-latest-id]");
      after = list ? parseInt(list.dataset.latestId, 10) || 0 : 0;
      connect();
    });
  }

  // --- Start --------------------------------------------------------------------------------

  function start() {
    const log = document.querySelector("[data-run-log]");
    if (log) startRunLog(log);
    const menu = document.querySelector("[data-notifications]");
    if (menu) startNotifications(menu);
    tickProgress();
    setInterval(tickProgress, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
