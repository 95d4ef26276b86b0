// The try-it page: plain browser JavaScript against the service's own JSON API, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], metadata: {}, samples: [], file: null, fileName: null, batchFiles: [] };

function authHeaders() {
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem("catalog-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

// Errors are shown as the API words them: its "error" message and machine-readable "code".
async function apiError(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: fall through */ }
  if (body && body.error) return `${body.error} (HTTP ${response.status}, ${body.code})`;
  return `HTTP ${response.status} ${response.statusText}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(target, message) {
  $(target).textContent = message;
  $(target).hidden = !message;
}

async function loadModels() {
  const response = await fetch("/models");
  if (!response.ok) { $("models").textContent = await apiError(response); return; }
  state.models = (await response.json()).models;
  $("models").replaceChildren(...state.models.map((m) =>
    el("span", { class: `chip ${m.ready ? "ready" : "down"}`, title: m.error || `${m.precision} on ${m.provider}`,
                 text: `${m.category} v${m.version}` })));
  for (const id of ["category", "batch-category"]) {
    $(id).replaceChildren(...state.models.map((m) => {
      const option = el("option", { value: m.name, text: m.category });
      if (!m.ready) option.disabled = true;
      return option;
    }));
  }
  if (state.models.length === 0) $("models").textContent = "no models loaded";
  await renderDeclared();
}

async function metadata(slug) {
  if (!state.metadata[slug]) {
    const response = await fetch(`/v2/models/${encodeURIComponent(slug)}`);
    if (!response.ok) throw new Error(await apiError(response));
    state.metadata[slug] = await response.json();
  }
  return state.metadata[slug];
}

async function renderDeclared() {
  const slug = $("category").value;
  if (!slug) return;
  const meta = await metadata(slug);
  // One BYTES output per attribute carries its vocabulary; the FP32 "_confidence" outputs do not.
  const attributes = meta.outputs.filter((output) => output.datatype === "BYTES");
  $("declared").replaceChildren(...attributes.map((output) => {
    const select = el("select", { name: output.name, "data-attribute": output.name },
      el("option", { value: "", text: "—" }),
      ...output.parameters.values.map((v) => el("option", { value: v, text: v })));
    return el("label", { text: output.name.replaceAll("_", " ") }, select);
  }));
}

function setFile(blob, name) {
  state.file = blob;
  state.fileName = name;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  $("drop-hint").hidden = true;
}

async function loadSamples() {
  const response = await fetch("/static/samples/samples.json");
  if (!response.ok) return;
  // Only the categories this server serves: a sample of another category could not be predicted.
  const served = new Set(state.models.filter((m) => m.ready).map((m) => m.name));
  state.samples = (await response.json()).filter((sample) => served.has(sample.category));
  $("gallery").replaceChildren(...state.samples.map((sample) => {
    const button = el("button", { type: "button", title: `${sample.category}: ${sample.file}`,
                                  "data-sample": sample.file },
      el("img", { src: `/static/samples/${sample.file}`, alt: sample.file }));
    button.addEventListener("click", async () => {
      const blob = await (await fetch(`/static/samples/${sample.file}`)).blob();
      document.querySelectorAll(".gallery button").forEach((b) => b.classList.remove("selected"));
      button.classList.add("selected");
      if ([...$("category").options].some((o) => o.value === sample.category)) {
        $("category").value = sample.category;
        await renderDeclared();
      }
      setFile(blob, sample.file);
    });
    return button;
  }));
}

function declaredValues() {
  const declared = {};
  document.querySelectorAll("#declared select").forEach((select) => {
    if (select.value) declared[select.dataset.attribute] = select.value;
  });
  return declared;
}

function confidenceBar(confidence, low) {
  const bar = el("span", { class: low ? "bar low" : "bar" }, el("span", {}));
  bar.firstChild.style.width = `${(confidence * 100).toFixed(1)}%`;
  return el("span", {}, bar, el("span", { class: "pct", text: `${(confidence * 100).toFixed(0)}%` }));
}

function categoryName(slug) {
  const model = state.models.find((m) => m.name === slug);
  return model ? model.category : slug;
}

// A photo the model's detector finds unlike its training images: say so, and offer the category whose
// model finds it familiar (the service's category check) as a one-click switch.
function renderOod(result) {
  const ood = result.out_of_distribution;
  const banner = $("ood-banner");
  if (!ood || !ood.flagged) { banner.hidden = true; banner.replaceChildren(); return; }
  const withheld = Object.values(result.attributes).every((a) => a.abstained);
  const parts = [el("strong", { text: "This photo is unlike the photos this model learned from." }),
    ` Its unfamiliarity score is ${ood.score.toFixed(1)} (flagged above ${ood.threshold.toFixed(1)})` +
    (withheld ? "; every attribute abstains, and the model's guesses are shown greyed." : ".")];
  const check = result.category_check;
  if (check && check.best_fit && check.best_fit !== result.model) {
    const button = el("button", { type: "button", class: "primary switch", id: "ood-switch",
                                  text: `Predict it as ${categoryName(check.best_fit)}` });
    button.addEventListener("click", async () => {
      $("category").value = check.best_fit;
      await renderDeclared();
      $("single-form").requestSubmit();
    });
    parts.push(el("p", {}, `It looks more like ${categoryName(check.best_fit)}. `, button));
  } else if (check) {
    parts.push(el("p", { text: "No loaded category's model recognises it either: is it a product photo?" }));
  }
  banner.replaceChildren(...parts);
  banner.hidden = false;
}

function renderResult(result) {
  $("result-model").textContent = `${result.category} · model ${result.model} v${result.model_version}`;
  renderOod(result);
  const conflicted = new Set(result.conflicts.map((c) => c.attribute));
  $("conflicts").replaceChildren(...result.conflicts.map((c) => el("div", { class: "conflict" },
    el("strong", { text: `${c.attribute.replaceAll("_", " ")}: ` }),
    `the listing says “${c.declared}”, the image shows “${c.predicted}” (${(c.confidence * 100).toFixed(0)}% confident)`)));
  $("attributes").replaceChildren(...Object.entries(result.attributes).map(([name, a]) => {
    const value = a.abstained
      ? el("span", { class: "abstained", text: a.decoded_value }, el("span", { class: "badge", text: "abstained" }))
      : el("span", { text: a.value });
    if (conflicted.has(name)) value.append(el("span", { class: "badge conflict-badge", text: "conflict" }));
    const alternatives = a.top_k.slice(1).map((t) => `${t.value} ${(t.confidence * 100).toFixed(0)}%`).join(", ");
    return el("tr", { class: conflicted.has(name) ? "has-conflict" : "", "data-attribute": name },
      el("td", { text: name.replaceAll("_", " ") }), el("td", {}, value),
      el("td", {}, confidenceBar(a.confidence, a.abstained)), el("td", { class: "muted", text: alternatives }));
  }));
  const t = result.timings;
  $("timings").textContent = `total ${t.total_ms.toFixed(1)} ms · preprocess ${t.preprocess_ms.toFixed(1)} ms · ` +
    `queue ${t.queue_ms.toFixed(1)} ms · model ${t.compute_ms.toFixed(1)} ms (batch of ${t.batch_size}) · ` +
    `abstain below ${result.threshold}`;
  $("result").hidden = false;
}

async function predict(event) {
  event.preventDefault();
  showError("error", "");
  if (!state.file) { showError("error", "Choose an image first (drop one, browse, or pick a sample)."); return; }
  const form = new FormData();
  form.append("image", state.file, state.fileName || "upload");
  form.append("category", $("category").value);
  const declared = declaredValues();
  if (Object.keys(declared).length) form.append("declared", JSON.stringify(declared));
  form.append("threshold", $("threshold").value);
  $("predict").disabled = true;
  try {
    const response = await fetch("/predict", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) { $("result").hidden = true; showError("error", await apiError(response)); return; }
    renderResult(await response.json());
  } catch (error) {
    showError("error", `The service could not be reached: ${error.message}`);
  } finally {
    $("predict").disabled = false;
  }
}

// Challenge ids are integers. A catalog dump names its files by id (000123.jpg): when every file name
// ends in a number and no two numbers repeat, those are the ids; otherwise the upload order is.
function batchIds(files) {
  const digits = files.map((f) => (f.name.match(/(\d+)(?=\.[a-z]+$)/i) || [])[1]);
  const numbers = digits.map((d) => (d === undefined ? undefined : String(parseInt(d, 10))));
  const distinct = new Set(numbers);
  const usable = numbers.every((n) => n !== undefined) && distinct.size === numbers.length;
  return files.map((_, i) => (usable ? numbers[i] : String(i)));
}

function servedOptions(selected) {
  return state.models.filter((m) => m.ready).map((m) => {
    const option = el("option", { value: m.name, text: m.category });
    option.selected = m.name === selected;
    return option;
  });
}

// One row per chosen file, each with its own category (the default one to begin with).
function renderBatchFiles() {
  $("batch-list").replaceChildren(...state.batchFiles.map((f, i) => {
    const select = el("select", { "data-file": String(i), "aria-label": `category of ${f.name}` }, ...servedOptions(f.category));
    select.addEventListener("change", () => { f.category = select.value; });
    return el("tr", {}, el("td", { text: f.name }), el("td", {}, select));
  }));
  $("batch-list-wrap").hidden = state.batchFiles.length === 0;
}

function chooseBatchFiles(files) {
  const fallback = $("batch-category").value;
  state.batchFiles = files.map((f) => ({ ...f, category: f.category || fallback }));
  renderBatchFiles();
}

async function runBatch(event) {
  event.preventDefault();
  showError("batch-error", "");
  const files = state.batchFiles;
  if (!files.length) { showError("batch-error", "Choose some images first (or use the sample photos)."); return; }
  const form = new FormData();
  const ids = batchIds(files);
  files.forEach((f, i) => {
    form.append("images", f.blob, f.name);
    form.append("ids", ids[i]);
    form.append("categories", f.category);
  });
  $("batch-run").disabled = true;
  try {
    const response = await fetch("/batch", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) { $("batch-result").hidden = true; showError("batch-error", await apiError(response)); return; }
    renderBatch((await response.json()).items, files);
  } catch (error) {
    showError("batch-error", `The service could not be reached: ${error.message}`);
  } finally {
    $("batch-run").disabled = false;
  }
}

function renderBatch(items, files) {
  state.batchItems = items;
  const ok = items.filter((item) => item.status === 200).length;
  $("batch-summary").textContent = `${ok} of ${items.length} images predicted`;
  $("batch-rows").replaceChildren(...items.map((item) => {
    const detail = item.result
      ? Object.entries(item.result.attributes).map(([n, a]) => `${n}: ${a.value ?? "—"}`).join(" · ")
      : `${item.error.error} (${item.error.code})`;
    return el("tr", {}, el("td", { text: item.id ?? String(item.index) }), el("td", { text: files[item.index].name }),
      el("td", { class: item.status === 200 ? "status-ok" : "status-error", text: String(item.status) }),
      el("td", { text: detail }));
  }));
  $("batch-result").hidden = false;
}

// The challenge's submission format: id,Category,len,attr_1..attr_10 (unused slots say "dummy").
function submissionCsv(items) {
  const columns = ["id", "Category", "len", ...Array.from({ length: 10 }, (_, i) => `attr_${i + 1}`)];
  const quote = (v) => (/[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
  const lines = [columns.join(",")];
  for (const item of items) {
    if (!item.result) continue;
    const row = { id: item.id ?? String(item.index), Category: item.result.category,
                  len: String(Object.keys(item.result.attributes).length), ...item.result.row };
    lines.push(columns.map((c) => quote(String(row[c] ?? ""))).join(","));
  }
  return lines.join("\n") + "\n";
}

function download() {
  const blob = new Blob([submissionCsv(state.batchItems || [])], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: "predictions.csv" });
  document.body.append(link);
  link.click();
  link.remove();
}

// Every sample photo of every served category, each filed under its own category.
async function useSamples() {
  chooseBatchFiles(await Promise.all(state.samples.map(async (s) =>
    ({ blob: await (await fetch(`/static/samples/${s.file}`)).blob(), name: s.file, category: s.category }))));
  $("batch-samples").textContent = `using ${state.batchFiles.length} sample photos`;
}

function selectTab(button) {
  document.querySelectorAll(".tabs button").forEach((b) => {
    b.setAttribute("aria-selected", String(b === button));
    $(b.dataset.panel).hidden = b !== button;
  });
}

function wireDropzone() {
  const zone = $("dropzone");
  $("browse").addEventListener("click", () => $("file").click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter") $("file").click(); });
  $("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) setFile(f, f.name); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) setFile(f, f.name);
  });
}

window.addEventListener("DOMContentLoaded", async () => {
  $("api-key").value = localStorage.getItem("catalog-api-key") || "";
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => selectTab(b)));
  $("threshold").addEventListener("input", () => { $("threshold-value").textContent = Number($("threshold").value).toFixed(2); });
  $("category").addEventListener("change", renderDeclared);
  $("batch-category").addEventListener("change", () => {
    state.batchFiles.forEach((f) => { f.category = $("batch-category").value; });
    renderBatchFiles();
  });
  $("batch-files").addEventListener("change", () => {
    chooseBatchFiles([...$("batch-files").files].map((f) => ({ blob: f, name: f.name })));
    $("batch-samples").textContent = "use the sample photos";
  });
  $("batch-samples").addEventListener("click", useSamples);
  $("single-form").addEventListener("submit", predict);
  $("batch-form").addEventListener("submit", runBatch);
  $("download").addEventListener("click", download);
  wireDropzone();
  await loadModels().catch((e) => showError("error", e.message));
  await loadSamples();  // after the models: the gallery shows only the categories they serve
  document.body.dataset.ready = "true";
});
