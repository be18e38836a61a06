import { defineConfig } from "vitest/config";

// Pure modules only (js/lib/): node environment, no DOM. An empty run is a failure
// (vitest's default; passWithNoTests stays off).
export default defineConfig({
  test: {
    include: ["js/tests/**/*.test.js"],
    environment: "node",
  },
});
