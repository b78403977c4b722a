// Pages that show pending studies list their ids in data-pending-ids; poll until one changes, then reload.
(function () {
  const holder = document.querySelector("[data-pending-ids]");
  if (!holder) return;
  const ids = holder.dataset.pendingIds.split(",").filter(Boolean);
  if (ids.length === 0) return;
  const url = holder.dataset.statusUrl + "?ids=" + ids.join(",");
  const initial = JSON.parse(holder.dataset.initialStatuses || "{}");
  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (response.ok) {
        const body = await response.json();
        for (const [id, status] of Object.entries(body.statuses)) {
          if (initial[id] !== status) { window.location.reload(); return; }
        }
      }
    } catch (error) { /* network blip: try again on the next tick */ }
    window.setTimeout(poll, 3000);
  }
  window.setTimeout(poll, 3000);
})();

// Study page: the heatmap laid over the film (with its opacity), or an older result's heatmap picture; zoom.
(function () {
  const toggle = document.getElementById("heatmap-toggle");
  const image = document.getElementById("study-image");
  const layer = document.getElementById("heatmap-layer");
  const opacity = document.getElementById("heatmap-opacity");
  if (toggle && layer) {
    toggle.addEventListener("change", function () {
      // Loaded on first use: each fetch is an audited read of the heatmap.
      if (toggle.checked && !layer.getAttribute("src")) layer.src = layer.dataset.src;
      layer.hidden = !toggle.checked;
      if (opacity) opacity.disabled = !toggle.checked;
    });
    if (opacity) {
      opacity.addEventListener("input", function () { layer.style.opacity = String(opacity.value / 100); });
    }
  } else if (toggle && image && image.dataset.heatmapSrc) {
    toggle.addEventListener("change", function () {
      image.src = toggle.checked ? image.dataset.heatmapSrc : image.dataset.imageSrc;
    });
  }
  const zoom = document.getElementById("zoom-toggle");
  const stack = document.getElementById("film-stack");
  if (zoom && stack) {
    zoom.addEventListener("click", function () { stack.classList.toggle("zoomed"); });
  }
})();
