// Cronos: the little the pages need beyond HTMX. Everything works without it; it only helps.
"use strict";

// Agents page: "select all" and the count of selected agents for the bulk actions. The boxes
// live in the table that search swaps, so listen on the document (event delegation).
function cronosSelected() {
  return document.querySelectorAll('input[name="agents"][form="bulk-form"]:checked');
}

function cronosUpdateBulk() {
  const count = document.querySelector("[data-selected-count]");
  if (!count) return;
  const n = cronosSelected().length;
  count.textContent = n ? `${n} selected` : "Select agents to act on several at once.";
}

document.addEventListener("change", (event) => {
  const target = event.target;
  if (target.matches("[data-select-all]")) {
    document.querySelectorAll('input[name="agents"][form="bulk-form"]').forEach((box) => {
      box.checked = target.checked;
    });
  }
  if (target.matches("[data-select-all], input[name='agents']")) cronosUpdateBulk();
});

document.addEventListener("htmx:afterSwap", cronosUpdateBulk);

// A bulk action with nothing selected would only come back with a message: say so at once.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.matches("[data-bulk]")) return;
  if (cronosSelected().length === 0) {
    event.preventDefault();
    const count = form.querySelector("[data-selected-count]");
    if (count) count.textContent = "Select at least one agent first.";
  }
});

// Controls that only work with JavaScript (auto-scroll, select all) come hidden, marked
// data-js-only, and are shown here; without JavaScript the page says what to do instead.
function cronosShowScripted(root) {
  root.querySelectorAll("[data-js-only]").forEach((element) => {
    element.hidden = false;
  });
}

document.addEventListener("DOMContentLoaded", () => cronosShowScripted(document));
document.addEventListener("htmx:load", (event) => cronosShowScripted(event.detail.elt));

// A search form's fields follow the address bar. HTMX keeps the address in step with a search
// (hx-push-url), but the page it restores on Back is a snapshot of the HTML, in which a field
// still holds what the page was first served with: fill the fields from the URL instead.
// A parameter missing from the URL means the field's default: empty, or a select's first option.
function cronosFormsFromUrl() {
  const params = new URLSearchParams(window.location.search);
  document.querySelectorAll("form[data-url-state]").forEach((form) => {
    for (const field of form.elements) {
      if (!field.name || ["submit", "button", "hidden", "reset"].includes(field.type)) continue;
      const values = params.getAll(field.name);
      if (field.type === "checkbox" || field.type === "radio") {
        field.checked = values.includes(field.value);
      } else if (field.tagName === "SELECT") {
        field.value = values.length ? values[0] : "";
        if (!values.length || field.selectedIndex < 0) field.selectedIndex = 0;
      } else {
        field.value = values.length ? values[0] : "";
      }
    }
  });
}

document.addEventListener("htmx:historyRestore", cronosFormsFromUrl);
// The page kept in memory (back-forward cache) has its fields as the person left them.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) cronosFormsFromUrl();
});
// A page served for this address has its fields written by the server from it (leaving out
// a value it refused), but the browser may refill what was typed before: the served values win.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-url-state]").forEach((form) => form.reset());
});

// A request made from the page that fails (a 403 for a stale form, a 500, the network gone)
// says so on the page, in the server's words where it gave some (the site's error pages mark
// them data-problem), instead of leaving a button that seems to do nothing.
const CRONOS_STATUS_TEXT = {
  0: "Cronos could not be reached: check the connection, then try again.",
  400: "The request was refused as malformed (HTTP 400).",
  403: "Not allowed (HTTP 403).",
  404: "Not found (HTTP 404): it may have been deleted.",
  405: "That cannot be done this way (HTTP 405).",
};

function cronosProblemFrom(xhr) {
  const status = xhr ? xhr.status : 0;
  const body = (xhr && xhr.responseText) || "";
  const type = (xhr && xhr.getResponseHeader("Content-Type")) || "";
  let text = "";
  let reload = false;
  if (body && type.startsWith("text/html") && body.includes("<")) {
    const page = new DOMParser().parseFromString(body, "text/html");
    const marked = page.querySelector("[data-problem]");
    if (marked) {
      text = marked.textContent;
      reload = marked.hasAttribute("data-reload");
    }
  } else if (body && body.length <= 300) {
    text = body; // a short answer in plain words ("Which run? Give its id.")
  }
  text = text.replace(/\s+/g, " ").trim();
  if (!text) {
    text =
      CRONOS_STATUS_TEXT[status] ||
      (status >= 500
        ? `The server failed to answer (HTTP ${status}). Try again in a moment.`
        : `The request failed (HTTP ${status}).`);
  }
  return { text, reload };
}

function cronosActionName(element) {
  if (!element || !element.matches) return "";
  const button = element.matches("button")
    ? element
    : element.querySelector("button[type=submit], button:not([type])");
  return button ? button.textContent.replace(/\s+/g, " ").trim() : "";
}

function cronosShowProblem(event) {
  const list = document.querySelector("[data-problems]");
  if (!list) return;
  const detail = event.detail || {};
  const config = detail.requestConfig || {};
  const source = `${config.verb || ""} ${config.path || ""}`;
  const problem = cronosProblemFrom(event.type === "htmx:responseError" ? detail.xhr : null);
  const action = (config.verb || "get") !== "get" ? cronosActionName(detail.elt) : "";
  // One line per request: a poll failing every few seconds updates its line, not a new one.
  let item = [...list.children].find((li) => li.dataset.source === source);
  if (!item) {
    item = document.createElement("li");
    item.className = "message error";
    item.dataset.source = source;
    list.appendChild(item);
  }
  item.replaceChildren();
  const words = document.createElement("span");
  words.dataset.problemText = "";
  words.textContent = action ? `“${action}” did not work. ${problem.text}` : problem.text;
  item.appendChild(words);
  if (problem.reload) {
    const reload = document.createElement("button");
    reload.type = "button";
    reload.className = "small";
    reload.textContent = "Reload the page";
    reload.addEventListener("click", () => window.location.reload());
    item.append(" ", reload);
  }
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.className = "link small dismiss";
  dismiss.textContent = "Dismiss";
  dismiss.addEventListener("click", () => item.remove());
  item.append(" ", dismiss);
}

document.addEventListener("htmx:responseError", cronosShowProblem);
document.addEventListener("htmx:sendError", cronosShowProblem);
document.addEventListener("htmx:timeout", cronosShowProblem);

// The same request working again (a poll after the network came back) clears its line.
document.addEventListener("htmx:afterRequest", (event) => {
  const detail = event.detail || {};
  if (!detail.successful) return;
  const config = detail.requestConfig || {};
  const source = `${config.verb || ""} ${config.path || ""}`;
  document.querySelectorAll("[data-problems] > li").forEach((li) => {
    if (li.dataset.source === source) li.remove();
  });
});
