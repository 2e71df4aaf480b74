// The projections page's live data: every second, read /projections.json and update each
// slot's row (position, head, lag, owner, rate, bar); every five seconds reload the lag
// chart. No other page needs script.
(function () {
  var table = document.getElementById("projections");
  if (!table) { return; }
  var url = table.getAttribute("data-live");
  function set(row, cls, text) {
    var cell = row.querySelector("." + cls);
    if (cell) { cell.textContent = text; }
  }
  function refresh() {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        (data.slots || []).forEach(function (s) {
          var rows = table.querySelectorAll("tr[data-slot]");
          for (var i = 0; i < rows.length; i++) {
            var row = rows[i];
            if (row.getAttribute("data-slot") !== s.slot) { continue; }
            set(row, "position", s.position);
            set(row, "head", s.head);
            set(row, "lag", s.lag);
            set(row, "lag-seconds", s.lag_seconds.toFixed(1));
            set(row, "owner", s.owner || "");
            set(row, "rate", s.rate == null ? "-" : s.rate.toFixed(1));
            var fill = row.querySelector(".fill");
            if (fill) { fill.style.width = s.progress.toFixed(1) + "%"; }
          }
        });
      })
      .catch(function () {});
  }
  var ticks = 0;
  setInterval(function () {
    refresh();
    ticks += 1;
    var chart = document.getElementById("lag-chart");
    if (chart && ticks % 5 === 0) {
      chart.src = chart.src.split("?")[0] + "?t=" + Date.now();
    }
  }, 1000);
})();
