// The lint of the shim's JavaScript (and of the repository's Node tests),
// run by the test command: ESLint's recommended rules on Node 22's ESM.
import js from '@eslint/js';
import globals from 'globals';

export default [
  js.configs.recommended,
  {
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: { ecmaVersion: 2024, sourceType: 'module', globals: { ...globals.node } },
  },
];
