// Cronos's additions to the Django admin: what the Content-Security-Policy keeps out of the
// templates (no onsubmit= there).
"use strict";

// A form marked data-confirm (a rollback) asks its question before it is sent.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  if (!window.confirm(form.dataset.confirm)) event.preventDefault();
});
