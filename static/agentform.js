// The agent form's conditions builder (templates/agents/conditions_builder.html), on the edit
// page and in the admin: each row shows the inputs of its kind only, and rows are added and
// removed. Everything works without it: every input shows, the form comes with a spare row,
// and a row whose kind is set to none is dropped. Listeners sit on the document.
"use strict";

function cronosConditionRow(row) {
  const kind = row.querySelector("[data-condition-kind]").value;
  row.querySelectorAll("[data-kinds]").forEach((input) => {
    input.hidden = !input.dataset.kinds.split(" ").includes(kind);
  });
}

function cronosConditionsSetUp(root) {
  root.querySelectorAll("[data-conditions-builder]").forEach((builder) => {
    builder.classList.add("scripted");
    builder.querySelectorAll("[data-condition-row]").forEach(cronosConditionRow);
    builder.querySelectorAll("[data-js-only]").forEach((element) => {
      element.hidden = false;
    });
  });
}

function cronosClearConditionRow(row) {
  row.querySelectorAll("input").forEach((input) => {
    input.value = "";
  });
  row.querySelector("[data-condition-kind]").value = "";
  cronosConditionRow(row);
}

document.addEventListener("DOMContentLoaded", () => cronosConditionsSetUp(document));

document.addEventListener("change", (event) => {
  if (event.target.matches("[data-condition-kind]")) {
    cronosConditionRow(event.target.closest("[data-condition-row]"));
  }
});

document.addEventListener("click", (event) => {
  const add = event.target.closest("[data-add-condition]");
  if (add) {
    const rows = add.closest("[data-conditions-builder]").querySelector("[data-condition-rows]");
    const last = rows.querySelector("[data-condition-row]:last-child");
    if (!last) return;
    const row = last.cloneNode(true);
    row.querySelectorAll("[id]").forEach((element) => element.removeAttribute("id"));
    cronosClearConditionRow(row);
    rows.appendChild(row);
    row.querySelector("[data-condition-kind]").focus();
    return;
  }
  const remove = event.target.closest("[data-remove-condition]");
  if (remove) {
    const row = remove.closest("[data-condition-row]");
    const rows = row.parentElement;
    // The last row stays, emptied: it is the one "Add a condition" copies.
    if (rows.querySelectorAll("[data-condition-row]").length > 1) {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      next.querySelector("[data-condition-kind]").focus();
    } else {
      cronosClearConditionRow(row);
    }
  }
});
