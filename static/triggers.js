// The agent page's triggers and "Run with variables": copying a secret or URL shown once, and
// adding rows of variables. Everything works without it: the text can be selected by hand, and
// the form comes with empty rows. Listeners sit on the document, since HTMX swaps the section.
"use strict";

function cronosSelectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function cronosCopy(button) {
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = "Copied";
  } catch (error) {
    // No clipboard (a page not served over HTTPS or from localhost): select it to copy by hand.
    cronosSelectText(source);
    button.textContent = "Selected: press Ctrl+C";
  }
  window.setTimeout(() => {
    button.textContent = label;
  }, 2500);
}

function cronosAddVariable(button) {
  const rows = button.closest("form").querySelector("[data-variable-rows]");
  const last = rows.querySelector("[data-variable-row]:last-child");
  if (!last) return;
  const row = last.cloneNode(true);
  row.querySelectorAll("input").forEach((input) => {
    input.value = "";
  });
  rows.appendChild(row);
  row.querySelector("input").focus();
}

document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    cronosCopy(copy);
    return;
  }
  const add = event.target.closest("[data-add-variable]");
  if (add) cronosAddVariable(add);
});
