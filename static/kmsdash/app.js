// kmsdash front end: the only script of the project besides the vendored htmx and plotly.js.
// Charts arrive as data (a figure's JSON in a data-figure-json attribute), never as code.
(function () {
  "use strict";

  // A chart is <div data-figure-json="{...}"> carrying its figure (the |tojson template filter):
  // an attribute rather than a json_script block, because htmx drops <script> elements from
  // swapped fragments and every page's charts can arrive in one.
  function figureOf(el) {
    return el.dataset.figureJson ? JSON.parse(el.dataset.figureJson) : null;
  }

  function renderCharts(root) {
    if (typeof Plotly === "undefined") return;
    var charts = Array.prototype.slice.call(root.querySelectorAll("[data-figure-json]"));
    if (root.matches && root.matches("[data-figure-json]")) charts.push(root);
    charts.forEach(function (el) {
      var fig = figureOf(el);
      if (!fig) return;
      Plotly.react(el, fig.data || [], fig.layout || {}, { responsive: true, displaylogo: false });
    });
  }

  // <button data-clear="drawer"> empties the element with that id (closes the event drawer).
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-clear]");
    if (!button) return;
    var target = document.getElementById(button.dataset.clear);
    if (target) target.replaceChildren();
  });

  // Typing a date into a period form means a custom period. Capture phase: this runs before htmx
  // (listening on the form) sends the change.
  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!input.form || (input.name !== "since" && input.name !== "until")) return;
    var period = input.form.querySelector("select[name=period]");
    if (period) period.value = "custom";
  }, true);

  // <button data-copy="TEXT"> puts TEXT on the clipboard (a key's ARN next to its label) and says so.
  // navigator.clipboard needs a secure context (https or localhost); elsewhere, a selected textarea.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    event.preventDefault();
    var text = button.dataset.copy;
    function done() {
      button.classList.add("copied");
      button.textContent = "copied";
      setTimeout(function () { button.classList.remove("copied"); button.textContent = "copy"; }, 1500);
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      try { if (document.execCommand("copy")) done(); } finally { area.remove(); }
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  });

  // Filter forms send only the fields in use, so pushed URLs stay short and bookmarkable.
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.verb !== "get") return;
    var params = event.detail.parameters;
    Object.keys(params).forEach(function (name) {
      if (params[name] === "") delete params[name];
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.onLoad(renderCharts);
    } else {
      renderCharts(document);
    }
  });
})();
