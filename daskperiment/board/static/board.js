// daskperiment dashboard. Values from the store are only ever inserted with textContent
// (never innerHTML), so a parameter or code line containing markup shows as text.
"use strict";

(function () {
  const body = document.body;
  const experiment = body.dataset.experiment;
  const POLL_VERSION_MS = 3000;
  const POLL_METRICS_MS = 1500;

  // --- small utilities -----------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function apiUrl(path, params) {
    const base = "/api/experiments/" + encodeURIComponent(experiment) + "/" + path;
    const query = new URLSearchParams(params || {}).toString();
    return query ? base + "?" + query : base;
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function hint(target, text, cls) {
    target.replaceChildren(el("p", { class: cls || "hint", text }));
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // --- Bokeh plots -----------------------------------------------------------------------
  // A plot is a json_item from the server; its curves' data sources are named trial-<id>
  // so live points can be written into them without re-embedding the plot.
  let plotCounter = 0;

  // BokehJS (1.2 MB) is loaded only once a plot is wanted, after the table is on screen,
  // so the first view never waits for it.
  let bokehLoading = null;

  function bokehReady() {
    if (!bokehLoading) {
      bokehLoading = new Promise((resolve) => {
        if (window.Bokeh || !body.dataset.bokeh) return resolve();
        const tag = el("script", { src: body.dataset.bokeh });
        tag.addEventListener("load", () => resolve());
        tag.addEventListener("error", () => resolve());
        document.head.append(tag);
      });
    }
    return bokehLoading;
  }

  async function embedPlot(target, item) {
    await bokehReady();
    if (!window.Bokeh) {
      hint(target, "Plots need Bokeh: pip install 'daskperiment[board]'", "error-line");
      return null;
    }
    target.replaceChildren();
    const holder = el("div", { id: "bk-plot-" + ++plotCounter });
    target.append(holder);
    await Bokeh.embed.embed_item(item, holder.id);
    const doc = Bokeh.documents.find((d) => d.get_model_by_id(item.root_id) != null);
    const figure = doc ? doc.get_model_by_id(item.root_id) : null;
    const curves = figure
      ? figure.renderers.filter((r) => typeof r.name === "string" && r.name.startsWith("curve-")).length
      : 0;
    target.dataset.curves = String(curves);
    return doc;
  }

  function updateSeries(doc, series) {
    if (!doc) return;
    for (const [trial, points] of Object.entries(series)) {
      const source = doc.get_model_by_name("trial-" + trial);
      if (!source) continue;
      const current = source.data.epoch ? source.data.epoch.length : 0;
      if (current === points.epoch.length) continue;
      source.data = {
        epoch: points.epoch,
        value: points.value,
        trial: points.epoch.map(() => Number(trial)),
      };
    }
  }

  // A metric plot for a set of trials, refreshed while any of them is still running.
  class MetricPlot {
    constructor(target, key, trials) {
      this.target = target;
      this.key = key;
      this.trials = trials;
      this.doc = null;
      this.timer = null;
      this.stopped = false;
    }

    async show() {
      const params = { key: this.key, trials: this.trials.join(",") };
      const data = await getJSON(apiUrl("plots/metric", params));
      if (this.stopped) return;
      this.doc = await embedPlot(this.target, data.item);
      this.target.dataset.key = this.key;
      this.target.dataset.points = String(data.points);
      if (data.running.length) this.schedule();
    }

    schedule() {
      this.timer = setTimeout(() => this.poll(), POLL_METRICS_MS);
    }

    async poll() {
      if (this.stopped) return;
      try {
        const params = { key: this.key, trials: this.trials.join(",") };
        const data = await getJSON(apiUrl("metrics", params));
        updateSeries(this.doc, data.series);
        this.target.dataset.points = String(
          Object.values(data.series).reduce((n, s) => n + s.epoch.length, 0)
        );
        if (data.running.length) this.schedule();
      } catch (error) {
        this.schedule();
      }
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
    }
  }

  // --- history page ----------------------------------------------------------------------
  function historyPage() {
    const state = {
      page: 1, size: 50, sort: "Trial ID", order: "asc", q: "", status: "all",
      version: null, columns: [], params: [],
    };
    const selected = new Map(); // trial id -> status
    const table = document.getElementById("history");
    const thead = table.querySelector("thead");
    const tbody = table.querySelector("tbody");
    const errorLine = document.getElementById("query-error");
    const resultParam = document.getElementById("result-param");
    const metricKey = document.getElementById("metric-key");
    const metricTarget = document.getElementById("metric-plot");
    let metricPlot = null;
    // Answers can arrive out of order (typing in the filter, a poll, clicks): only the
    // answer to the latest request is shown.
    let historySeq = 0;
    let metricSeq = 0;

    function renderHead(columns) {
      const row = el("tr", {}, el("th", { class: "pick", text: "" }));
      for (const name of columns) {
        const sorted = state.sort === name;
        const arrow = sorted ? (state.order === "asc" ? " \u25B2" : " \u25BC") : "";
        const th = el("th", {
          class: "sortable" + (sorted ? " sorted" : ""),
          title: "sort by " + name,
          text: name + arrow,
          onclick: () => {
            state.order = sorted && state.order === "asc" ? "desc" : "asc";
            state.sort = name;
            state.page = 1;
            load();
          },
        });
        th.dataset.column = name;
        row.append(th);
      }
      thead.replaceChildren(row);
    }

    function renderRows(rows) {
      const fragment = document.createDocumentFragment();
      for (const row of rows) {
        const box = el("input", { type: "checkbox", title: "select trial " + row.id });
        box.checked = selected.has(row.id);
        box.addEventListener("change", () => {
          if (box.checked) selected.set(row.id, row.status);
          else selected.delete(row.id);
          tr.classList.toggle("selected", box.checked);
          selectionChanged();
        });
        const tr = el("tr", { class: "status-" + row.status }, el("td", { class: "pick" }, box));
        tr.dataset.trial = String(row.id);
        tr.classList.toggle("selected", box.checked);
        row.cells.forEach((text, index) => {
          const td = el("td", { title: text });
          if (index === 0) {
            const href = "/experiments/" + encodeURIComponent(experiment) + "/trials/" + row.id;
            td.append(el("a", { href, text }));
          } else {
            td.textContent = text;
          }
          if (state.columns[index] === "Success") td.classList.add("status-cell");
          tr.append(td);
        });
        fragment.append(tr);
      }
      tbody.replaceChildren(fragment);
    }

    function renderPager(data) {
      document.getElementById("page-info").textContent =
        "page " + data.page + " of " + data.pages + " \u00B7 " + data.matched + " of " + data.total + " trials";
      document.getElementById("prev").disabled = data.page <= 1;
      document.getElementById("next").disabled = data.page >= data.pages;
      document.getElementById("trial-count").textContent = data.total + " trials";
      state.page = data.page;
    }

    function renderParams(params) {
      if (params.join("\u0000") === state.params.join("\u0000")) return;
      state.params = params;
      const keep = resultParam.value;
      resultParam.replaceChildren(...params.map((p) => el("option", { value: p, text: p })));
      if (params.includes(keep)) resultParam.value = keep;
      loadResultPlot();
    }

    async function load() {
      const params = {
        page: state.page, size: state.size, sort: state.sort, order: state.order,
        q: state.q, status: state.status,
      };
      const seq = ++historySeq;
      try {
        const data = await getJSON(apiUrl("history", params));
        if (seq !== historySeq) return;
        errorLine.hidden = true;
        state.columns = data.columns;
        state.version = data.version;
        renderHead(data.columns);
        renderRows(data.rows);
        if (!table.dataset.loaded) performance.mark("history-rows");
        renderPager(data);
        renderParams(data.params);
        table.dataset.loaded = "true";
      } catch (error) {
        if (seq !== historySeq) return;
        errorLine.textContent = error.message;
        errorLine.hidden = false;
      }
    }

    async function loadResultPlot() {
      const target = document.getElementById("result-plot");
      if (!resultParam.value) {
        hint(target, "No parameters to plot the result against.");
        return;
      }
      try {
        const item = await getJSON(apiUrl("plots/result", { param: resultParam.value }));
        await embedPlot(target, item);
      } catch (error) {
        hint(target, error.message, "error-line");
      }
    }

    function selectedIds() {
      return [...selected.keys()].sort((a, b) => a - b);
    }

    function selectionChanged() {
      const ids = selectedIds();
      document.getElementById("selection").textContent = ids.length
        ? "selected: " + ids.join(", ")
        : "no trials selected";
      document.getElementById("compare").disabled = ids.length !== 2;
      document.getElementById("clear-selection").disabled = ids.length === 0;
      loadMetricKeys();
    }

    async function loadMetricKeys() {
      const ids = selectedIds();
      const seq = ++metricSeq;
      if (metricPlot) metricPlot.stop();
      metricPlot = null;
      metricTarget.dataset.curves = "0";
      if (!ids.length) {
        metricKey.replaceChildren();
        hint(metricTarget, "Select trials in the table to overlay their metric curves.");
        return;
      }
      try {
        const data = await getJSON(apiUrl("metric-keys", { trials: ids.join(",") }));
        if (seq !== metricSeq) return;
        const keep = metricKey.value;
        metricKey.replaceChildren(...data.keys.map((k) => el("option", { value: k, text: k })));
        if (data.keys.includes(keep)) metricKey.value = keep;
        if (!data.keys.length) {
          hint(metricTarget, data.running.length
            ? "No metrics yet; waiting for the running trial\u2026"
            : "The selected trials recorded no metrics.");
          if (data.running.length) setTimeout(() => selectedIds().join() === ids.join() && loadMetricKeys(), POLL_METRICS_MS);
          return;
        }
        await loadMetricPlot();
      } catch (error) {
        hint(metricTarget, error.message, "error-line");
      }
    }

    async function loadMetricPlot() {
      if (metricPlot) metricPlot.stop();
      const ids = selectedIds();
      if (!ids.length || !metricKey.value) return;
      metricPlot = new MetricPlot(metricTarget, metricKey.value, ids);
      try {
        await metricPlot.show();
      } catch (error) {
        hint(metricTarget, error.message, "error-line");
      }
    }

    async function pollVersion() {
      try {
        const data = await getJSON(apiUrl("version"));
        if (state.version !== null && data.version !== state.version) {
          await load();
          await loadResultPlot();
        }
      } finally {
        setTimeout(pollVersion, POLL_VERSION_MS);
      }
    }

    document.getElementById("filter").addEventListener("input", debounce((event) => {
      state.q = event.target.value;
      state.page = 1;
      load();
    }, 250));
    document.getElementById("status").addEventListener("change", (event) => {
      state.status = event.target.value;
      state.page = 1;
      load();
    });
    document.getElementById("size").addEventListener("change", (event) => {
      state.size = Number(event.target.value);
      state.page = 1;
      load();
    });
    document.getElementById("prev").addEventListener("click", () => { state.page -= 1; load(); });
    document.getElementById("next").addEventListener("click", () => { state.page += 1; load(); });
    document.getElementById("compare").addEventListener("click", () => {
      const [a, b] = selectedIds();
      location.href = "/experiments/" + encodeURIComponent(experiment) + "/diff?a=" + a + "&b=" + b;
    });
    document.getElementById("clear-selection").addEventListener("click", () => {
      selected.clear();
      for (const box of tbody.querySelectorAll("input[type=checkbox]")) box.checked = false;
      for (const tr of tbody.querySelectorAll("tr.selected")) tr.classList.remove("selected");
      selectionChanged();
    });
    resultParam.addEventListener("change", loadResultPlot);
    metricKey.addEventListener("change", loadMetricPlot);

    load();
    setTimeout(pollVersion, POLL_VERSION_MS);
  }

  // --- trial page ------------------------------------------------------------------------
  function trialPage() {
    const trial = Number(body.dataset.trial);
    const container = document.getElementById("trial-metrics");
    const plots = new Map(); // key -> MetricPlot

    async function refresh() {
      let data;
      try {
        data = await getJSON(apiUrl("metric-keys", { trials: String(trial) }));
      } catch (error) {
        hint(container, error.message, "error-line");
        return;
      }
      const running = data.running.length > 0;
      for (const key of data.keys) {
        if (plots.has(key)) continue;
        if (!plots.size) container.replaceChildren();
        const target = el("div", { class: "plot metric" });
        target.dataset.key = key;
        container.append(target);
        const plot = new MetricPlot(target, key, [trial]);
        plots.set(key, plot);
        plot.show().catch((error) => hint(target, error.message, "error-line"));
      }
      container.dataset.keys = String(plots.size);
      if (running) {
        setTimeout(refresh, POLL_METRICS_MS);
      } else if (body.dataset.status === "running") {
        const badge = document.getElementById("status");
        badge.textContent = "finished";
        badge.className = "badge status-success";
        const reload = el("a", { href: location.pathname, text: "reload to see the result" });
        badge.after(" ", reload);
        body.dataset.status = "finished";
      }
    }
    refresh();
  }

  if (body.dataset.page === "history") historyPage();
  if (body.dataset.page === "trial") trialPage();
})();
