/**
 * Assertions for tests (JSR's `@std/assert` is not reachable here): thin wrappers over `node:assert` with the
 * familiar std names and argument order.
 *
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Asserts that `cond` is truthy. */
export function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}

/** Deep strict equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

/** Deep strict inequality. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, msg);
}

/** |actual − expected| ≤ tolerance (absolute). */
export function assertAlmostEquals(actual: number, expected: number, tolerance = 1e-7, msg?: string): void {
  if (!(Math.abs(actual - expected) <= tolerance)) {
    throw new nodeAssert.AssertionError({
      message: msg ?? `expected ${actual} to be within ${tolerance} of ${expected}`,
      actual,
      expected,
    });
  }
}

/** Asserts `fn` throws an error of class `ErrorClass` whose message includes `includes`; returns the error. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  ErrorClass: new (...args: any[]) => E = Error as any,
  includes?: string,
): E {
  try {
    fn();
  } catch (e) {
    checkError(e, ErrorClass, includes);
    return e as E;
  }
  throw new nodeAssert.AssertionError({ message: "expected the function to throw" });
}

/** Async twin of {@link assertThrows}. */
export async function assertRejects<E extends Error = Error>(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  ErrorClass: new (...args: any[]) => E = Error as any,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    checkError(e, ErrorClass, includes);
    return e as E;
  }
  throw new nodeAssert.AssertionError({ message: "expected the promise to reject" });
}

// deno-lint-ignore no-explicit-any
function checkError(e: unknown, ErrorClass: new (...args: any[]) => Error, includes?: string): void {
  if (!(e instanceof ErrorClass)) {
    throw new nodeAssert.AssertionError({ message: `expected ${ErrorClass.name}, got ${String(e)}` });
  }
  if (includes !== undefined && !e.message.includes(includes)) {
    throw new nodeAssert.AssertionError({ message: `expected message to include "${includes}", got "${e.message}"` });
  }
}
