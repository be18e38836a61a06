import { defineConfig } from "vitest/config";

// The views' pure parts (js/lib/, and the helpers of js/heatmap/, js/matrix/, js/flow/) and
// the contract with Python (js/tests/contract.test.js reads tests/contract/fixtures/):
// node environment, no DOM. An empty run is a failure (vitest's default; passWithNoTests
// stays off).
export default defineConfig({
  test: {
    include: ["js/tests/**/*.test.js"],
    environment: "node",
  },
});
