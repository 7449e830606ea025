// The dashboard's chart: orders settled per minute over the last hour (the statistics'
// perMinute, computed by the server), as an SVG with axes, a legend, a text description
// and a visually hidden table of the minutes that had any.
"use strict";

(function (scope) {
  const SVG = "http://www.w3.org/2000/svg";
  const SERIES = [
    { key: "paid", label: "Paid" },
    { key: "cancelled", label: "Cancelled" },
    { key: "failed", label: "Failed" },
  ];
  const WIDTH = 640;
  const HEIGHT = 220;
  const LEFT = 40;
  const RIGHT = 12;
  const TOP = 12;
  const BOTTOM = 40;

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  // A step of 1, 2 or 5 times a power of ten giving at most five gridlines.
  function yStep(high) {
    for (let power = 1; ; power *= 10) {
      for (const step of [1, 2, 5]) if (high / (step * power) <= 5) return step * power;
    }
  }

  function draw(svg, series) {
    const count = series.paid.length;
    const start = new Date(series.start);
    const minuteAt = (i) => new Date(start.getTime() + i * series.bucketSeconds * 1000);
    const high = Math.max(1, ...SERIES.flatMap(({ key }) => series[key]));
    const step = yStep(high);
    const top = Math.ceil(high / step) * step;
    const plotW = WIDTH - LEFT - RIGHT;
    const plotH = HEIGHT - TOP - BOTTOM;
    const x = (i) => LEFT + (plotW * i) / (count - 1);
    const y = (value) => TOP + plotH * (1 - value / top);

    const title = svg.querySelector("title");
    const desc = svg.querySelector("desc");
    svg.replaceChildren(title, desc);
    const axes = element("g", { class: "axes" });
    for (let value = 0; value <= top; value += step) {
      axes.append(element("line", { class: "gridline", x1: LEFT, x2: WIDTH - RIGHT, y1: y(value), y2: y(value) }));
      axes.append(element("text", { class: "y-label", x: LEFT - 6, y: y(value) + 4 }, String(value)));
    }
    for (let i = 0; i < count; i += 10) {
      axes.append(element("line", { class: "tick", x1: x(i), x2: x(i), y1: TOP + plotH, y2: TOP + plotH + 4 }));
      axes.append(element("text", { class: "x-label", x: x(i), y: TOP + plotH + 18 }, clock(minuteAt(i))));
    }
    axes.append(element("text", { class: "x-label", x: x(count - 1), y: TOP + plotH + 18 }, "now"));
    axes.append(element("line", { class: "axis", x1: LEFT, x2: LEFT, y1: TOP, y2: TOP + plotH }));
    axes.append(element("line", { class: "axis", x1: LEFT, x2: WIDTH - RIGHT, y1: TOP + plotH, y2: TOP + plotH }));
    axes.append(element("text", { class: "axis-title", x: LEFT + plotW / 2, y: HEIGHT - 4 }, "minute (local time), last hour"));
    svg.append(axes);
    for (const { key } of SERIES) {
      const points = series[key].map((value, i) => `${x(i).toFixed(1)},${y(value).toFixed(1)}`);
      svg.append(element("polyline", {
        class: `series series-${key}`, "data-series": key, "data-values": series[key].join(","), points: points.join(" "),
      }));
    }
    describe(desc, series, minuteAt);
    legend(series);
    table(series, minuteAt);
  }

  function total(values) {
    return values.reduce((sum, value) => sum + value, 0);
  }

  function describe(desc, series, minuteAt) {
    const totals = SERIES.map(({ key, label }) => `${total(series[key])} ${label.toLowerCase()}`);
    const last = series.paid.length - 1;
    desc.textContent = `Orders settled per minute from ${clock(minuteAt(0))} to ${clock(minuteAt(last))}: `
      + `${totals.join(", ")}. The table below the chart lists every minute with any.`;
  }

  function legend(series) {
    const list = document.getElementById("chart-legend");
    list.replaceChildren(...SERIES.map(({ key, label }) => {
      const item = document.createElement("li");
      item.dataset.series = key;
      const swatch = document.createElement("span");
      swatch.className = `swatch swatch-${key}`;
      item.append(swatch, `${label}: ${total(series[key])}`);
      return item;
    }));
  }

  function table(series, minuteAt) {
    const body = document.querySelector("#chart-table tbody");
    const rows = [];
    series.paid.forEach((_, i) => {
      const values = SERIES.map(({ key }) => series[key][i]);
      if (!values.some(Boolean)) return;
      const row = document.createElement("tr");
      for (const text of [clock(minuteAt(i)), ...values]) {
        const cell = document.createElement("td");
        cell.textContent = String(text);
        row.append(cell);
      }
      rows.push(row);
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 4;
      cell.textContent = "No orders settled in the last hour.";
      row.append(cell);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  scope.AdminChart = { draw };
})(window);
