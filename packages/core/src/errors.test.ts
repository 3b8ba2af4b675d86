import { describe, expect, it } from "vitest";
import {
  ERROR_CODES,
  FilerelayError,
  PermanentError,
  SinkError,
  describeError,
  errorCode,
  isPermanent,
} from "./errors.js";

describe("errors", () => {
  it("carries code, cause and the table's permanence", () => {
    const cause = new Error("ENOSPC: no space left on device");
    const err = new SinkError("WRITE_FAILED", "writing /out/x failed", { cause });
    expect(err).toBeInstanceOf(FilerelayError);
    expect(err.code).toBe("WRITE_FAILED");
    expect(err.cause).toBe(cause);
    expect(isPermanent(err)).toBe(ERROR_CODES.WRITE_FAILED.permanent);
    expect(describeError(err)).toBe("writing /out/x failed: ENOSPC: no space left on device");
  });
  it("PermanentError is always permanent; unknown errors are transient", () => {
    expect(isPermanent(new PermanentError("bad file"))).toBe(true);
    expect(errorCode(new PermanentError("bad file"))).toBe("HANDLER_PERMANENT");
    expect(isPermanent(new Error("boom"))).toBe(false);
    expect(errorCode(new Error("boom"))).toBe("HANDLER_FAILED");
  });
  it("describeError does not repeat a cause its wrapper already quotes", () => {
    const io = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
    const refused = new Error("connection refused", { cause: io });
    const err = new FilerelayError("NATS_CONNECT_FAILED", "cannot connect after 1 attempt: connection refused", {
      cause: refused,
    });
    expect(describeError(err)).toBe(
      "cannot connect after 1 attempt: connection refused: connect ECONNREFUSED 127.0.0.1:1 (ECONNREFUSED)",
    );
  });
});
