// Sample page: POST the request (the server checks it: 4xx + one sentence), then stream its frames over SSE.
const $ = (id) => document.getElementById(id);
const client = sessionStorage.labClient || (sessionStorage.labClient = Math.random().toString(36).slice(2));
let runs = [], frames = [], source = null;

function showRun() {
  const r = runs.find((r) => r.name === $("run").value); if (!r) return;
  $("sampler").innerHTML = "";
  for (const [name, text] of Object.entries(r.samplers)) $("sampler").appendChild(el("option", {value: name, title: text}, name));
  $("sampler").value = r.sampler; $("steps").value = r.steps;
  $("class").innerHTML = ""; $("class").appendChild(el("option", {value: ""}, "any"));
  (r.class_names || []).forEach((c, i) => $("class").appendChild(el("option", {value: i}, c)));
  $("classrow").style.display = r.num_classes ? "block" : "none";
  $("promptrow").style.display = r.text ? "block" : "none";
  $("guidancerow").style.display = (r.num_classes || r.text) ? "block" : "none";
  $("runtext").textContent = `${r.model}, ${r.path} path, T = ${r.T}, ${r.prediction}-prediction, step ${r.step}` +
    (r.latent ? ", latent (frames decoded)" : "");
}
function showFrame(f) {
  $("x").src = f.x; $("x0hat").src = f.x0_hat;
  // the sampler reports after each step: x has moved on from t, and x0_hat is the network's estimate made at t
  $("xcap").textContent = `x after step ${f.i + 1} of ${f.steps} (the step from t = ${f.t.toFixed(3)})`;
  $("x0cap").textContent = `x0_hat, estimated at t = ${f.t.toFixed(3)}`;
}
async function go() {
  if (source) source.close();
  frames = []; $("scrubrow").style.display = "none"; $("final").removeAttribute("src");
  const body = {client, run: $("run").value, sampler: $("sampler").value, steps: $("steps").value,
                seed: $("seed").value, n: $("n").value, class: $("class").value, prompt: $("prompt").value,
                guidance: $("guidance").value};
  const t0 = performance.now();
  let job;
  try { job = await api("/api/sample", body); } catch (e) { $("status").textContent = "Not started: see the message above."; return; }
  $("status").textContent = `sampling ${job.n} images with ${job.sampler}, ${job.steps} steps ...`;
  source = new EventSource(`/api/events?job=${job.job}`);
  source.addEventListener("frame", (e) => {
    const f = JSON.parse(e.data); frames.push(f); showFrame(f);
    if (frames.length === 1) $("status").dataset.first = ((performance.now() - t0) / 1000).toFixed(2);
    $("status").textContent = `step ${f.i + 1} / ${f.steps}; first frame after ${$("status").dataset.first} s`;
  });
  source.addEventListener("done", (e) => {
    const d = JSON.parse(e.data); source.close();
    $("final").src = d.grid;
    $("finalcap").textContent = `final grid: ${d.n} images` + (d.labels ? ` (classes ${[...new Set(d.labels)].join(",")})` : "");
    $("status").textContent = `done: ${d.n} images, ${d.steps} steps in ${d.seconds.toFixed(2)} s = ` +
      `${d.ms_per_image.toFixed(1)} ms per image; first frame after ${$("status").dataset.first} s`;
    $("scrub").max = frames.length - 1; $("scrub").value = frames.length - 1; $("scrubrow").style.display = "block";
    $("scrubvalue").textContent = `step ${frames.length} / ${frames.length}`;
  });
  for (const kind of ["error", "cancelled"]) source.addEventListener(kind, (e) => {
    if (!e.data) return;  // a dropped connection, not a message
    source.close(); const d = JSON.parse(e.data);
    if (kind === "error") showError(d.message); $("status").textContent = d.message;
  });
}
$("scrub").oninput = () => { const f = frames[+$("scrub").value]; showFrame(f); $("scrubvalue").textContent = `step ${f.i + 1} / ${frames.length}`; };
$("run").onchange = showRun; $("go").onclick = go;
(async () => {
  runs = await api("/api/runs");
  if (!runs.length) { showError("The lab was started without a run: restart it with `tinydiffusion lab --run DIR`."); return; }
  for (const r of runs) $("run").appendChild(el("option", {value: r.name}, r.name));
  const want = new URLSearchParams(location.search).get("run"); if (want) $("run").value = want;
  showRun();
})();
