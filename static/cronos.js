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
