/**
 * The backend tests run on: the native engine by default (CI builds it first), or the pure-JS
 * fallback with CASM_TEST_BACKEND=cpu, which must pass too on the small models the tests use.
 */
import { initEngine, type BackendChoice } from '../../src/engine/engine.js';

export async function useTestBackend(): Promise<string> {
  const choice = (process.env.CASM_TEST_BACKEND ?? 'tensorflow') as BackendChoice;
  return (await initEngine(choice, () => {})).backend;
}
