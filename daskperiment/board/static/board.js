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

  // BokehJS's embed_item is not safe to run twice at once (two plots of a page loading
  // together failed now and then with "n is not iterable"): embeds run one after another.
  let embedQueue = Promise.resolve();

  function embedPlot(target, item) {
    const run = embedQueue.then(() => embedPlotNow(target, item));
    embedQueue = run.catch(() => null);
    return run;
  }

  async function embedPlotNow(target, item) {
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
    target.dataset.root = item.root_id; // which Bokeh model the plot is (tests read it)
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
    constructor(target, key, trials, logs) {
      this.target = target;
      this.key = key;
      this.trials = trials;
      this.logs = logs || { x: false, y: false };
      this.doc = null;
      this.timer = null;
      this.stopped = false;
    }

    async show() {
      const params = {
        key: this.key, trials: this.trials.join(","),
        xlog: this.logs.x ? "1" : "0", ylog: this.logs.y ? "1" : "0",
      };
      const data = await getJSON(apiUrl("plots/metric", params));
      if (this.stopped) return;
      this.doc = await embedPlot(this.target, data.item);
      this.target.dataset.key = this.key;
      this.target.dataset.ylog = this.logs.y ? "1" : "0";
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

  // --- state in the URL -------------------------------------------------------------------
  // Every choice a page offers is kept in its query string (history.replaceState), so a
  // reload or a shared link shows the same view.
  const urlState = new URLSearchParams(location.search);

  function saveUrl(values) {
    const params = new URLSearchParams(location.search);
    for (const [name, value] of Object.entries(values)) {
      if (value === "" || value === null || value === undefined || value === false) params.delete(name);
      else params.set(name, value === true ? "1" : String(value));
    }
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
  }

  function checkbox(id, name, onChange) {
    const box = document.getElementById(id);
    box.checked = urlState.get(name) === "1";
    box.addEventListener("change", () => {
      saveUrl({ [name]: box.checked });
      onChange();
    });
    return box;
  }

  function setOptions(select, values, keep, blank) {
    const options = values.map((v) => el("option", { value: v, text: v }));
    if (blank) options.unshift(el("option", { value: "", text: blank }));
    select.replaceChildren(...options);
    if (keep !== null && (values.includes(keep) || (blank && keep === ""))) select.value = keep;
  }

  // --- history page ----------------------------------------------------------------------
  const MAX_COMPARE = 100;

  function historyPage() {
    const state = {
      page: Number(urlState.get("page")) || 1,
      size: Number(urlState.get("size")) || 50,
      sort: urlState.get("sort") || "Trial ID",
      order: urlState.get("order") === "desc" ? "desc" : "asc",
      q: urlState.get("q") || "",
      status: urlState.get("status") || "all",
      version: null, columns: [], params: [],
    };
    let brushes = [];
    try {
      brushes = JSON.parse(urlState.get("brush") || "[]");
    } catch (error) {
      brushes = [];
    }
    const selected = new Map(); // trial id -> status
    for (const id of (urlState.get("sel") || "").split(",")) {
      if (/^[1-9][0-9]*$/.test(id)) selected.set(Number(id), "unknown");
    }
    const table = document.getElementById("history");
    const thead = table.querySelector("thead");
    const tbody = table.querySelector("tbody");
    const errorLine = document.getElementById("query-error");
    const resultParam = document.getElementById("result-param");
    const resultColor = document.getElementById("result-color");
    const metricKey = document.getElementById("metric-key");
    const metricTarget = document.getElementById("metric-plot");
    const filterBox = document.getElementById("filter");
    filterBox.value = state.q;
    document.getElementById("status").value = state.status;
    document.getElementById("size").value = String(state.size);
    const resultX = checkbox("result-xlog", "rxlog", loadResultPlot);
    const resultY = checkbox("result-ylog", "rylog", loadResultPlot);
    const metricX = checkbox("metric-xlog", "mxlog", loadMetricPlot);
    const metricY = checkbox("metric-ylog", "mylog", loadMetricPlot);
    let metricPlot = null;
    // Answers can arrive out of order (typing in the filter, a poll, clicks): only the
    // answer to the latest request is shown.
    let historySeq = 0;
    let metricSeq = 0;
    let parallelSeq = 0;
    let resultSeq = 0;

    const parallel = new ParallelCoordinates.Plot(
      document.getElementById("parallel"),
      document.getElementById("parallel-axes"),
      (current, axesOnly) => {
        brushes = current;
        saveUrl({ brush: brushes.length ? JSON.stringify(brushes) : "", plog: [...parallel.logs].join(",") });
        showBrushes();
        if (!axesOnly) {
          state.page = 1;
          load();
        }
      }
    );
    parallel.brushes = brushes;
    for (const name of (urlState.get("plog") || "").split(",")) if (name) parallel.logs.add(name);
    parallel.selected = new Set(selected.keys());

    function showBrushes() {
      document.getElementById("brush-info").textContent = brushes.length
        ? brushes.map((b) => b.axis).join(", ") + " limited"
        : "";
      document.getElementById("clear-brushes").disabled = !brushes.length;
    }

    function saveQuery() {
      saveUrl({
        q: state.q, status: state.status === "all" ? "" : state.status,
        size: state.size === 50 ? "" : state.size, page: state.page === 1 ? "" : state.page,
        sort: state.sort === "Trial ID" ? "" : state.sort, order: state.order === "asc" ? "" : state.order,
      });
    }

    function queryParams() {
      return { q: state.q, status: state.status, sort: state.sort, order: state.order };
    }

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
            // From the state, not from this rendering: a second click before the answer
            // to the first has redrawn the header still turns the order around.
            state.order = state.sort === name && state.order === "asc" ? "desc" : "asc";
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
        if (box.checked) selected.set(row.id, row.status);
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
      const first = !state.params.length;
      state.params = params;
      setOptions(resultParam, params, first ? urlState.get("param") : resultParam.value);
      setOptions(resultColor, params, first ? urlState.get("color") || "" : resultColor.value, "(none)");
      loadResultPlot();
    }

    async function load() {
      const params = { ...queryParams(), page: state.page, size: state.size };
      if (brushes.length) params.brush = JSON.stringify(brushes);
      const seq = ++historySeq;
      saveQuery();
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
        saveQuery();
        renderParams(data.params);
        table.dataset.loaded = "true";
        table.dataset.matched = String(data.matched);
      } catch (error) {
        if (seq !== historySeq) return;
        errorLine.textContent = error.message;
        errorLine.hidden = false;
      }
    }

    async function loadParallel() {
      const seq = ++parallelSeq;
      try {
        const data = await getJSON(apiUrl("parallel", { q: state.q, status: state.status }));
        if (seq !== parallelSeq) return;
        parallel.set(data);
        showBrushes();
      } catch (error) {
        // the table shows the filter's error
      }
    }

    async function loadResultPlot() {
      const target = document.getElementById("result-plot");
      saveUrl({ param: resultParam.value, color: resultColor.value });
      if (!resultParam.value) {
        hint(target, "No parameters to plot the result against.");
        return;
      }
      const params = {
        param: resultParam.value, xlog: resultX.checked ? "1" : "0", ylog: resultY.checked ? "1" : "0",
      };
      if (resultColor.value) params.color = resultColor.value;
      const seq = ++resultSeq;
      try {
        const item = await getJSON(apiUrl("plots/result", params));
        if (seq !== resultSeq) return;
        await embedPlot(target, item);
        if (seq !== resultSeq) return;
        target.dataset.xlog = params.xlog;
        target.dataset.ylog = params.ylog;
      } catch (error) {
        if (seq === resultSeq) hint(target, error.message, "error-line");
      }
    }

    function selectedIds() {
      return [...selected.keys()].sort((a, b) => a - b);
    }

    function selectionChanged(note) {
      const ids = selectedIds();
      document.getElementById("selection").textContent = ids.length
        ? (ids.length > 12 ? ids.length + " trials selected" : "selected: " + ids.join(", ")) + (note || "")
        : "no trials selected";
      document.getElementById("compare").disabled = ids.length !== 2;
      document.getElementById("compare-selected").disabled = ids.length < 2;
      document.getElementById("clear-selection").disabled = ids.length === 0;
      saveUrl({ sel: ids.join(",") });
      parallel.selected = new Set(ids);
      parallel.draw();
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
        const keep = metricKey.value || urlState.get("key");
        setOptions(metricKey, data.keys, keep);
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
      saveUrl({ key: metricKey.value });
      metricPlot = new MetricPlot(metricTarget, metricKey.value, ids, { x: metricX.checked, y: metricY.checked });
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
          await loadParallel();
        }
      } finally {
        setTimeout(pollVersion, POLL_VERSION_MS);
      }
    }

    async function selectMatching() {
      const params = queryParams();
      if (brushes.length) params.brush = JSON.stringify(brushes);
      try {
        const data = await getJSON(apiUrl("matching", params));
        for (const id of data.ids.slice(0, MAX_COMPARE)) if (!selected.has(id)) selected.set(id, "unknown");
        for (const box of tbody.querySelectorAll("tr")) {
          const on = selected.has(Number(box.dataset.trial));
          box.classList.toggle("selected", on);
          box.querySelector("input").checked = on;
        }
        const note = data.ids.length > MAX_COMPARE ? " (the first " + MAX_COMPARE + " of " + data.ids.length + " matching)" : "";
        selectionChanged(note);
      } catch (error) {
        errorLine.textContent = error.message;
        errorLine.hidden = false;
      }
    }

    filterBox.addEventListener("input", debounce((event) => {
      state.q = event.target.value;
      state.page = 1;
      load();
      loadParallel();
    }, 250));
    document.getElementById("status").addEventListener("change", (event) => {
      state.status = event.target.value;
      state.page = 1;
      load();
      loadParallel();
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
    document.getElementById("compare-selected").addEventListener("click", () => {
      location.href = "/experiments/" + encodeURIComponent(experiment) + "/compare?trials=" + selectedIds().join(",");
    });
    document.getElementById("select-matching").addEventListener("click", selectMatching);
    document.getElementById("clear-brushes").addEventListener("click", () => {
      parallel.brushes = [];
      parallel.draw();
      parallel.onBrush([], false);
    });
    document.getElementById("clear-selection").addEventListener("click", () => {
      selected.clear();
      for (const box of tbody.querySelectorAll("input[type=checkbox]")) box.checked = false;
      for (const tr of tbody.querySelectorAll("tr.selected")) tr.classList.remove("selected");
      selectionChanged();
    });
    resultParam.addEventListener("change", loadResultPlot);
    resultColor.addEventListener("change", loadResultPlot);
    metricKey.addEventListener("change", loadMetricPlot);

    showBrushes();
    load();
    loadParallel();
    if (selected.size) selectionChanged();
    setTimeout(pollVersion, POLL_VERSION_MS);
  }

  // --- a grid of metric plots: one per key, one curve per trial (trial, compare, diff) ----
  function metricGrid(container, trials, onFinished) {
    const plots = new Map(); // key -> MetricPlot
    const tools = el("div", { class: "plot-tools" });
    const logs = {};
    for (const [axis, label] of [["x", "log x (epoch)"], ["y", "log y (value)"]]) {
      const box = el("input", { type: "checkbox", id: "grid-" + axis + "log" });
      box.checked = urlState.get(axis + "log") === "1";
      logs[axis] = box;
      box.addEventListener("change", () => {
        saveUrl({ [axis + "log"]: box.checked });
        for (const [key, plot] of plots) {
          plot.stop();
          const fresh = new MetricPlot(plot.target, key, trials, { x: logs.x.checked, y: logs.y.checked });
          plots.set(key, fresh);
          fresh.show().catch((error) => hint(plot.target, error.message, "error-line"));
        }
      });
      tools.append(el("label", {}, box, " " + label));
    }
    container.before(tools);

    async function refresh() {
      let data;
      try {
        data = await getJSON(apiUrl("metric-keys", { trials: trials.join(",") }));
      } catch (error) {
        hint(container, error.message, "error-line");
        return;
      }
      if (!data.keys.length && !data.running.length) {
        hint(container, "No metrics recorded.");
      }
      for (const key of data.keys) {
        if (plots.has(key)) continue;
        if (!plots.size) container.replaceChildren();
        const target = el("div", { class: "plot metric" });
        target.dataset.key = key;
        container.append(target);
        const plot = new MetricPlot(target, key, trials, { x: logs.x.checked, y: logs.y.checked });
        plots.set(key, plot);
        plot.show().catch((error) => hint(target, error.message, "error-line"));
      }
      container.dataset.keys = String(plots.size);
      if (data.running.length) setTimeout(refresh, POLL_METRICS_MS);
      else if (onFinished) onFinished();
    }
    refresh();
  }

  // --- trial page ------------------------------------------------------------------------
  function trialPage() {
    const trial = Number(body.dataset.trial);
    metricGrid(document.getElementById("trial-metrics"), [trial], () => {
      if (body.dataset.status !== "running") return;
      const badge = document.getElementById("status");
      badge.textContent = "finished";
      badge.className = "badge status-success";
      const reload = el("a", { href: location.pathname, text: "reload to see the result" });
      badge.after(" ", reload);
      body.dataset.status = "finished";
    });
  }

  // --- comparison and diff pages: the trials' curves overlaid -----------------------------
  function comparePage() {
    const trials = (body.dataset.trials || "").split(",").filter(Boolean).map(Number);
    const container = document.getElementById("compare-metrics");
    if (container && trials.length) metricGrid(container, trials);
  }

  if (body.dataset.page === "history") historyPage();
  if (body.dataset.page === "trial") trialPage();
  if (body.dataset.page === "compare" || body.dataset.page === "diff") comparePage();
})();
