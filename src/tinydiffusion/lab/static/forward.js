// Forward-process page: ask the server for x_t at the slider's t (same seed = same eps) and draw the curves.
const $ = (id) => document.getElementById(id);
let curves = null, upload = null, pending = false, again = false;

function params() {
  const p = {path: $("path").value, T: $("T").value, t: $("t").value, index: $("index").value, seed: $("seed").value};
  if (upload) p.image = upload;
  return p;
}
async function loadCurves() {
  const q = new URLSearchParams({path: $("path").value || "ddpm-linear", T: $("T").value});
  curves = await api(`/api/curves?${q}`);
  if (!$("path").options.length) {
    for (const [name, text] of Object.entries(curves.paths)) $("path").appendChild(el("option", {value: name}, name));
  }
  $("pathtext").textContent = curves.paths[curves.path];
  const t = $("t");
  if (curves.T) { t.min = 0; t.max = curves.T - 1; t.step = 1; $("tlabel").textContent = "step k"; }
  else { t.min = 0; t.max = 1; t.step = 0.001; $("tlabel").textContent = "t"; }
  if (!t.dataset.ready || +t.value > +t.max) t.value = curves.T ? Math.floor(curves.T / 2) : 0.5;
  t.dataset.ready = "1";
}
async function update() {
  if (pending) { again = true; return; }  // one request in flight; the latest slider value wins
  pending = true;
  try {
    const v = upload ? await api("/api/forward", params()) : await api(`/api/forward?${new URLSearchParams(params())}`);
    $("x0").src = v.x0; $("xt").src = v.x_t; $("eps").src = v.eps;
    $("tvalue").textContent = v.T ? `k = ${v.k} (t = ${v.t.toFixed(4)})` : `t = ${v.t.toFixed(3)}`;
    $("xtcap").textContent = v.T ? `x_t at k = ${v.k}` : `x_t at t = ${v.t.toFixed(3)}`;
    $("readout").innerHTML =
      `<span id="alphabar">alpha_bar = <b>${fmt(v.alpha_bar)}</b></span> &nbsp; alpha = <b>${fmt(v.alpha)}</b>` +
      ` &nbsp; sigma = <b>${fmt(v.sigma)}</b> &nbsp; SNR = <b>${fmt(v.snr)}</b>` +
      ` &nbsp; log-SNR = <b>${fmt(v.log_snr)}</b><br>${v.symbolic}<br>${v.plugged}`;
    draw(v);
  } catch (e) { /* the error box says why */ }
  pending = false;
  if (again) { again = false; update(); }
}
function draw(v) {
  const c = $("curves"), g = c.getContext("2d"), W = 320, H = 200, gap = 75;
  g.clearRect(0, 0, c.width, c.height);
  const panels = [["alpha_bar = alpha²", curves.alpha_bar, 0, 1, "#1565c0"],
                  ["sigma² (noise variance)", curves.sigma2, 0, 1, "#c62828"],
                  ["log-SNR", curves.log_snr, null, null, "#2e7d32"]];
  const xs = curves.x, x0 = xs[0], x1 = xs[xs.length - 1];
  panels.forEach(([title, ys, lo, hi, color], p) => {
    const ox = 55 + p * (W + gap), oy = 30, finite = ys.filter((y) => y !== null);
    lo = lo ?? Math.max(Math.min(...finite), -15); hi = hi ?? Math.min(Math.max(...finite), 15);
    const X = (x) => ox + (x - x0) / (x1 - x0) * W, Y = (y) => oy + H - (Math.min(Math.max(y, lo), hi) - lo) / (hi - lo) * H;
    g.strokeStyle = "#999"; g.strokeRect(ox, oy, W, H);
    g.fillStyle = "#333"; g.font = "13px sans-serif"; g.fillText(title, ox, oy - 8);
    g.fillText(fmt(hi), ox - 50, oy + 10); g.fillText(fmt(lo), ox - 50, oy + H);
    g.fillText(`${curves.xlabel} ${x0}`, ox, oy + H + 16); g.fillText(`${x1}`, ox + W - 30, oy + H + 16);
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let started = false;
    xs.forEach((x, i) => { if (ys[i] === null) return; started ? g.lineTo(X(x), Y(ys[i])) : g.moveTo(X(x), Y(ys[i])); started = true; });
    g.stroke();
    const here = v.T ? v.k : v.t;  // the current t, marked
    g.strokeStyle = "#ff8f00"; g.lineWidth = 1.5; g.beginPath(); g.moveTo(X(here), oy); g.lineTo(X(here), oy + H); g.stroke();
    const yv = [v.alpha_bar, v.sigma ** 2, v.log_snr][p];
    if (yv !== null) { g.fillStyle = "#ff8f00"; g.beginPath(); g.arc(X(here), Y(yv), 4, 0, 7); g.fill(); }
  });
  g.lineWidth = 1;
}
async function reset() { try { await loadCurves(); } catch (e) { return; } update(); }
$("path").onchange = reset; $("T").onchange = reset;
$("t").oninput = update; $("index").onchange = () => { upload = null; $("upload").value = ""; update(); };
$("seed").onchange = update;
$("upload").onchange = () => {
  const f = $("upload").files[0]; if (!f) return;
  const r = new FileReader(); r.onload = () => { upload = r.result; update(); }; r.readAsDataURL(f);
};
reset();
