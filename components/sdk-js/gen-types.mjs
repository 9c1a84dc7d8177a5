// Generates TypeScript types for wit/'s `component` world into types/ with
// jco-transpile's generateGuestTypes: node gen-types.mjs JCO_TRANSPILE_DIR WIT_DIR OUT_DIR.
// jco-transpile 0.15's WASI shim (preview2-shim 0.26) no longer preopens "/",
// so the WIT folder would be unreadable: "/" is preopened here first.
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [jcoDir, witDir, outDir] = process.argv.slice(2).map((p) => resolve(p));
const require = createRequire(join(jcoDir, 'package.json'));
const fs = await import(pathToFileURL(require.resolve('@bytecodealliance/preview2-shim/filesystem')));
fs._setPreopens({ '/': '/' });
const { generateGuestTypes, writeFiles } = await import(pathToFileURL(join(jcoDir, 'dist/index.js')));
const files = await generateGuestTypes(witDir, { worldName: 'component', outDir: `${outDir}/` });
await writeFiles(files, false);
console.log(Object.keys(files).sort().join('\n'));
