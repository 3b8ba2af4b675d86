import { describe, expect, it } from "vitest";
import { authorize, bearerToken, buildApiKeys, roleAllows, sha256Hex } from "./apiKeys.js";
import { HttpError } from "./httpError.js";

const keys = buildApiKeys([
  { name: "ci", role: "upload", sha256: sha256Hex("k-upload") },
  { name: "viewer", role: "read", sha256: sha256Hex("k-read") },
  { name: "ops", role: "admin", sha256: sha256Hex("k-admin"), source: "api" },
]);

function refusal(fn: () => unknown): { status: number; code: string } {
  try {
    fn();
  } catch (err) {
    if (err instanceof HttpError) return { status: err.status, code: err.code };
    throw err;
  }
  throw new Error("not refused");
}

describe("API keys and roles", () => {
  it("admin implies upload and read; upload implies read", () => {
    expect(roleAllows("admin", "upload")).toBe(true);
    expect(roleAllows("admin", "read")).toBe(true);
    expect(roleAllows("upload", "read")).toBe(true);
    expect(roleAllows("upload", "admin")).toBe(false);
    expect(roleAllows("read", "upload")).toBe(false);
  });

  it("finds the principal by the key's hash; source defaults to the name", () => {
    expect(authorize(keys, "Bearer k-upload", "upload")).toEqual({ name: "ci", role: "upload", source: "ci" });
    expect(authorize(keys, "bearer k-admin", "read")).toEqual({ name: "ops", role: "admin", source: "api" });
  });

  it("401 without a (valid) key, 403 for a role below the route's", () => {
    expect(refusal(() => authorize(keys, undefined, "read"))).toEqual({ status: 401, code: "AUTH_REQUIRED" });
    expect(refusal(() => authorize(keys, "Bearer nope", "read"))).toEqual({ status: 401, code: "AUTH_REQUIRED" });
    expect(refusal(() => authorize(keys, "Basic k-upload", "read"))).toEqual({ status: 401, code: "AUTH_REQUIRED" });
    expect(refusal(() => authorize(keys, "Bearer k-read", "upload"))).toEqual({ status: 403, code: "AUTH_FORBIDDEN" });
    expect(refusal(() => authorize(keys, "Bearer k-upload", "admin"))).toEqual({ status: 403, code: "AUTH_FORBIDDEN" });
  });

  it("parses only well-formed bearer headers", () => {
    expect(bearerToken("Bearer abc")).toBe("abc");
    expect(bearerToken("Bearer  abc ")).toBe("abc");
    expect(bearerToken("Bearer a b")).toBeUndefined();
    expect(bearerToken("abc")).toBeUndefined();
  });

  it("a key listed twice is a configuration error", () => {
    expect(() =>
      buildApiKeys([
        { name: "a", role: "read", sha256: sha256Hex("x") },
        { name: "b", role: "read", sha256: sha256Hex("x") },
      ]),
    ).toThrow(/listed twice/);
  });
});
