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
  $("guidancerow").style.display = (r.num_classes || r.text || r.control) ? "block" : "none";
  $("controlrow").style.display = r.control ? "block" : "none"; $("mapfig").style.display = "none";
  if (r.control) {
    $("controltext").textContent = `${r.control.kind}: ${r.control.text}`; $("controlscale").value = r.control.scale;
  }
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
  const r = runs.find((r) => r.name === $("run").value);
  if (r && r.control) Object.assign(body, {control: $("controlsource").value, control_digit: $("controldigit").value,
    control_scale: $("controlscale").value, drop_control: $("dropcontrol").checked,
    control_image: $("controlsource").value === "drawn" ? $("pad").toDataURL("image/png") : ""});
  const t0 = performance.now();
  let job;
  try { job = await api("/api/sample", body); } catch (e) { $("status").textContent = "Not started: see the message above."; return; }
  $("status").textContent = `sampling ${job.n} images with ${job.sampler}, ${job.steps} steps ...`;
  if (job.control_map) {
    $("mapfig").style.display = "block"; $("controlmap").src = job.control_map;
    $("controlsrc").style.display = job.control_source ? "inline" : "none";
    if (job.control_source) $("controlsrc").src = job.control_source;
    $("mapcap").textContent = job.control_source ? "test digit | the map the network reads" : "the map the network reads";
  }
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
      `${d.ms_per_image.toFixed(1)} ms per image; first frame after ${$("status").dataset.first} s` +
      (d.fidelity ? `; the samples follow the map: F1 ${d.fidelity.f1.toFixed(3)} (1-pixel tolerance)` +
        (d.fidelity.label_accuracy !== undefined ? `, ${(100 * d.fidelity.label_accuracy).toFixed(0)} % read as the digit` : "") : "");
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
// the drawing pad: white strokes on black, as the maps are (the server resizes it to the run's images)
const pad = $("pad"), ink = pad.getContext("2d");
function clearPad() { ink.fillStyle = "#000"; ink.fillRect(0, 0, pad.width, pad.height); }
let drawing = false;
pad.onpointerdown = (e) => { drawing = true; ink.beginPath(); ink.moveTo(e.offsetX, e.offsetY); };
pad.onpointermove = (e) => {
  if (!drawing) return;
  Object.assign(ink, {strokeStyle: "#fff", lineWidth: 6, lineCap: "round", lineJoin: "round"});
  ink.lineTo(e.offsetX, e.offsetY); ink.stroke();
};
pad.onpointerup = pad.onpointerleave = () => { drawing = false; };
$("clearpad").onclick = clearPad; clearPad();
$("controlsource").onchange = () => {
  const drawn = $("controlsource").value === "drawn";
  $("drawrow").style.display = drawn ? "block" : "none"; $("digitrow").style.display = drawn ? "none" : "block";
};
(async () => {
  runs = await api("/api/runs");
  if (!runs.length) { showError("The lab was started without a run: restart it with `tinydiffusion lab --run DIR`."); return; }
  for (const r of runs) $("run").appendChild(el("option", {value: r.name}, r.name));
  const want = new URLSearchParams(location.search).get("run"); if (want) $("run").value = want;
  showRun();
})();
