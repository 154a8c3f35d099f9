// Shared by every page: the nav bar, one error box, JSON fetches that show the server's one-sentence errors.
const NAV = [["/forward", "Forward process"], ["/sample", "Sample"], ["/runs", "Runs"], ["/course", "Course"]];
function nav() {
  const n = document.createElement("nav");
  for (const [href, name] of NAV) {
    const a = document.createElement("a");
    a.href = href; a.textContent = name;
    if (location.pathname === href) a.className = "here";
    n.appendChild(a);
  }
  document.body.prepend(n);
}
function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || ""; box.style.display = message ? "block" : "none";
}
async function api(url, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify(body)};
  const r = await fetch(url, opts);
  const data = await r.json().catch(() => ({error: `The server answered ${r.status} without JSON.`}));
  if (!r.ok) { showError(`${data.error} (HTTP ${r.status})`); throw new Error(data.error); }
  showError("");
  return data;
}
function fmt(v) {
  if (v === null || v === undefined) return "inf";
  if (v === 0) return "0";
  return Math.abs(v) >= 0.01 && Math.abs(v) < 1e4 ? v.toFixed(4) : v.toExponential(2);
}
function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  Object.assign(e, attrs); if (text) e.textContent = text; return e;
}
nav();
