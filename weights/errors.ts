/**
 * Checkpoint errors, re-exported from the leaf module `graph/checkpoint_error.ts` (config readers in graph/ raise
 * them too, and graph/ imports nothing from weights/).
 *
 * @module
 */

export * from "../graph/checkpoint_error.ts";
