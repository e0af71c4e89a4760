// kmsdash front end: the only script of the project besides the vendored htmx and plotly.js.
// Charts arrive as data (<script type="application/json"> written by json_script), never as code.
(function () {
  "use strict";

  function renderCharts(root) {
    if (typeof Plotly === "undefined") return;
    root.querySelectorAll("[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.dataset.figure);
      if (!source) return;
      var fig = JSON.parse(source.textContent);
      Plotly.react(el, fig.data || [], fig.layout || {}, { responsive: true, displaylogo: false });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.onLoad(renderCharts);
    } else {
      renderCharts(document);
    }
  });
})();
