// Runs page: one run's config, loss curve (the viz module's figure), sample grids over training, metrics table.
const $ = (id) => document.getElementById(id);
let latest = 0;  // the newest request: an older run's answer arriving late must not overwrite the chosen run's
async function show() {
  const mine = ++latest;
  let d;
  try { d = await api(`/api/run?run=${encodeURIComponent($("run").value)}`); } catch (e) { return; }
  if (mine !== latest) return;
  $("summary").textContent = `${d.dir}: ${d.model}, ${d.path}, T = ${d.T}, step ${d.step}`;
  if (d.loss_png) $("loss").src = d.loss_png; else $("loss").removeAttribute("src");
  $("lossnote").textContent = d.loss_note || "";
  $("config").textContent = JSON.stringify(d.config, null, 2);
  $("samples").innerHTML = d.samples.length ? "" : "<p class='note'>No sample grids (train with train.sample_every &gt; 0).</p>";
  for (const s of d.samples) {
    const f = el("figure"); f.appendChild(el("img", {src: s.url, className: "grid", style: "width:200px"}));
    f.appendChild(el("figcaption", {}, `step ${s.step}`)); $("samples").appendChild(f);
  }
  const cols = [...new Set(d.rows.flatMap((r) => Object.keys(r)))];
  const t = $("metrics"); t.innerHTML = "";
  const head = el("tr"); cols.forEach((c) => head.appendChild(el("th", {}, c))); t.appendChild(head);
  for (const r of d.rows) {
    const tr = el("tr");
    cols.forEach((c) => tr.appendChild(el("td", {}, typeof r[c] === "number" ? String(+r[c].toPrecision(5)) : String(r[c] ?? ""))));
    t.appendChild(tr);
  }
  $("rowcount").textContent = `(${d.rows.length} of ${d.total_rows} training rows)`;
}
(async () => {
  const runs = await api("/api/runs");
  if (!runs.length) { showError("The lab was started without a run: restart it with `tinydiffusion lab --run DIR`."); return; }
  for (const r of runs) $("run").appendChild(el("option", {value: r.name}, r.name));
  $("run").onchange = show; show();
})();
