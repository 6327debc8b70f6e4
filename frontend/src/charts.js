/**
 * The indicator pages' charts (Chart.js, bundled here: no CDN). The Content-Security-Policy
 * forbids inline scripts, so a page says what to draw as data: a
 * <canvas data-chart="ID"> and, next to it, {{ data|json_script:"ID" }} holding
 * {type, labels, datasets: [{label, data}]}. Every chart has its table on the page (the
 * accessible equivalent); this only draws.
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  Tooltip,
} from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

// The portal's palette, distinguishable in grey as well (the order of the datasets).
const COLOURS = ['#1f5fa8', '#e08a1e', '#4a9a4a', '#8e44ad', '#6b6b6b'];

function draw(canvas) {
  const source = document.getElementById(canvas.dataset.chart);
  if (!source || canvas.dataset.chartDrawn) return;
  const spec = JSON.parse(source.textContent);
  canvas.dataset.chartDrawn = 'true';
  return new Chart(canvas, {
    type: spec.type || 'bar',
    data: {
      labels: spec.labels,
      datasets: spec.datasets.map((dataset, index) => ({
        ...dataset,
        backgroundColor: COLOURS[index % COLOURS.length],
      })),
    },
    options: {
      // No animation: a reader (and a test) sees the figures at once.
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { legend: { position: 'bottom' } },
    },
  });
}

export function drawCharts(root = document) {
  return [...root.querySelectorAll('canvas[data-chart]')].map(draw).filter(Boolean);
}

drawCharts();
