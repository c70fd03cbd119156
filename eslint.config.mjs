// ESLint (typescript-eslint's recommended rules) over the project's code; `npm run lint` runs it and Prettier's check.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      '.*dist/**',
      'node_modules/**',
      'scratch/**',
      'data/cache/**',
      'checkpoints/**',
      '.venv*/**',
      '.engine/**',
      '.whl/**',
      '.gl/**',
      'web/model/**',
    ],
  },
  ...tseslint.configs.recommended,
  {
    rules: {
      // A leading underscore names what a destructuring or a signature must mention but does not use.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
    },
  },
);
