// Bundles the dashboard into dist/: index.html, app.js (src/main.js and its imports, uPlot
// included) and app.css (src/app.css with uPlot's CSS). Everything is local: no CDN.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';

mkdirSync('dist', { recursive: true });
await esbuild.build({
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  outdir: 'dist',
  logLevel: 'warning',
});
await esbuild.build({
  entryPoints: { app: 'src/app.css' },
  bundle: true,
  minify: true,
  outdir: 'dist',
  logLevel: 'warning',
});
copyFileSync('src/index.html', 'dist/index.html');
