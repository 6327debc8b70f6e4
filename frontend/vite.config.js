/**
 * Builds the viewer into ../static/build/ (git-ignored): viewer.js (ES module entry) and
 * viewer.css, and the indicator pages' charts.js (a second entry), under fixed names, so that
 * a template can say {% static 'build/viewer.js' %} without a manifest; chunks, the decoding web worker and the WebAssembly codecs get hashed
 * names and are loaded relative to /static/build/ (Django's STATIC_URL + build/).
 * Nothing is fetched from elsewhere at run time.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const outDir = fileURLToPath(new URL('../static/build/', import.meta.url));

export default defineConfig({
  base: '/static/build/',
  // As Cornerstone3D recommends for the DICOM image loader (its worker and codecs must not be
  // pre-bundled by the dev server; dicom-parser is CommonJS).
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  // The decoding worker imports its codecs as ES modules.
  worker: { format: 'es' },
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2022',
    cssCodeSplit: false,
    sourcemap: false,
    // Cornerstone3D is large; the entry is loaded once per page and cached.
    chunkSizeWarningLimit: 6000,
    rollupOptions: {
      input: {
        viewer: fileURLToPath(new URL('src/main.js', import.meta.url)),
        // The indicator pages' charts (Chart.js): charts.js, loaded by those pages only.
        charts: fileURLToPath(new URL('src/charts.js', import.meta.url)),
      },
      output: {
        entryFileNames: '[name].js',
        chunkFileNames: 'chunks/[name]-[hash].js',
        assetFileNames: (info) =>
          (info.names || []).some((name) => name.endsWith('.css'))
            ? 'viewer.css'
            : 'assets/[name]-[hash][extname]',
      },
    },
  },
});
