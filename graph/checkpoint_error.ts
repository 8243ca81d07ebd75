/**
 * The one error type for bad checkpoints: a user can cause it (wrong directory, truncated download, wrong preset),
 * so its message names the file and tensor involved and says what is wrong.
 *
 * @module
 */

/** What went wrong, for callers (and the server) that branch on it rather than on the message. */
export type CheckpointErrorKind =
  | "not_found" // no checkpoint, missing file or config
  | "bad_config" // config.json / params.json / index JSON unreadable
  | "bad_header" // safetensors header length or JSON invalid
  | "bad_offsets" // data offsets out of range, overlapping, or not matching shape × dtype
  | "truncated" // file shorter than its header says
  | "missing_tensor"
  | "extra_tensor"
  | "duplicate_tensor" // one name in two shards
  | "shape"
  | "dtype"
  | "write"; // invalid input to a writer

/** One problem found while checking a checkpoint against an expected tensor list. */
export interface CheckpointProblem {
  /** Problem category. */
  kind: CheckpointErrorKind;
  /** Human-readable description naming the tensor and file. */
  message: string;
  /** Tensor name, when the problem concerns one tensor. */
  tensor?: string;
  /** File path involved (shard, index or directory). */
  file?: string;
}

/**
 * A checkpoint that cannot be read or does not match the model. `problems` lists every problem found when a check
 * collects several (the message shows the first few).
 *
 * @example
 * ```ts
 * try {
 *   await openSafetensors("model.safetensors");
 * } catch (e) {
 *   if (e instanceof CheckpointError && e.kind === "truncated") console.error("re-download:", e.file);
 * }
 * ```
 */
export class CheckpointError extends Error {
  /** Category of the first problem. */
  readonly kind: CheckpointErrorKind;
  /** Tensor name of the first problem, when there is one. */
  readonly tensor?: string;
  /** File of the first problem, when there is one. */
  readonly file?: string;
  /** Every problem found (at least one). */
  readonly problems: readonly CheckpointProblem[];

  /** One problem, or several collected by a check (summarised in the message). */
  constructor(problem: CheckpointProblem | readonly CheckpointProblem[], options?: ErrorOptions) {
    const problems = Array.isArray(problem) ? problem as readonly CheckpointProblem[] : [problem as CheckpointProblem];
    super(summarise(problems), options);
    this.name = "CheckpointError";
    this.kind = problems[0].kind;
    this.tensor = problems[0].tensor;
    this.file = problems[0].file;
    this.problems = problems;
  }
}

/** Shows at most this many problems in the message; the rest stay in `problems`. */
const SHOWN = 12;

function summarise(problems: readonly CheckpointProblem[]): string {
  if (problems.length === 1) return problems[0].message;
  const lines = problems.slice(0, SHOWN).map((p) => `  - ${p.message}`);
  if (problems.length > SHOWN) lines.push(`  … and ${problems.length - SHOWN} more`);
  return `checkpoint does not match the model (${problems.length} problems):\n${lines.join("\n")}`;
}
