// Fetches the dashboard's JSON endpoints (same origin) and draws them with plotly.js, which this
// app serves from the installed plotly package. Refreshes every REFRESH_MS.
"use strict";

const REFRESH_MS = 15000;
const CONFIG = { displaylogo: false, responsive: true };
const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function show(id, text) {
  document.getElementById(id).textContent = text;
}

function drawDaily(data) {
  const days = data.days;
  Plotly.react("daily", [{
    type: "bar",
    x: days.map(d => d.day),
    y: days.map(d => Number(d.revenue)),
    customdata: days.map(d => [d.units, d.sales]),
    hovertemplate: "%{x}<br>revenue %{y:.2f}<br>%{customdata[0]} units in %{customdata[1]} sales<extra></extra>",
    marker: { color: "#3366cc" },
  }], {
    margin: { t: 30, r: 10, b: 40, l: 60 },
    xaxis: { type: "date", tickformat: "%b %d" },
    yaxis: { title: { text: "revenue" }, rangemode: "tozero" },
  }, CONFIG);
}

function drawByProduct(data) {
  const products = data.products.slice().reverse(); // highest at the top of a horizontal bar chart
  Plotly.react("by-product", [{
    type: "bar",
    orientation: "h",
    y: products.map(p => `${p.name} (${p.sku})`),
    x: products.map(p => Number(p.revenue)),
    customdata: products.map(p => p.units),
    hovertemplate: "%{y}<br>revenue %{x:.2f}<br>%{customdata} units<extra></extra>",
    marker: { color: "#dc7633" },
  }], {
    margin: { t: 30, r: 10, b: 40, l: 160 },
    xaxis: { title: { text: "revenue" }, rangemode: "tozero" },
  }, CONFIG);
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [summary, daily, byProduct, health, cache] = await Promise.all([
      getJSON("api/sales/summary"), getJSON("api/sales/daily?days=14"), getJSON("api/sales/by-product?limit=10"),
      getJSON("api/health"), getJSON("api/cache"),
    ]);
    show("revenue", money.format(Number(summary.revenue)));
    show("today-revenue", money.format(Number(summary.today_revenue)));
    show("sales", String(summary.sales));
    show("average-sale", money.format(Number(summary.average_sale)));
    show("active-users", String(health.active_users));
    show("error-rate", String(health.error_rate));
    show("cache", `${cache.backend}, ${cache.hits} hits, ${cache.misses} misses ` +
                  `(${(100 * cache.hit_rate).toFixed(1)}% hit rate), ${cache.entries} entries`);
    drawDaily(daily);
    drawByProduct(byProduct);
    status.className = "";
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (err) {
    status.className = "error";
    status.textContent = `Could not load: ${err.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
