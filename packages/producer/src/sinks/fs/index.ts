/** The filesystem sink (SINK=fs) and the pieces its tests and operators use. */
export { createFsSink, type FsSinkDeps, type FsSinkOptions } from "./fsSink.js";
export { fsyncDirShared } from "./dirSync.js";
export { isTempFileName, staleTempVerdict, tempFileName, TEMP_FILE_PATTERN, type TempFileFacts } from "./tempFiles.js";
export { classifyWriteError } from "./writeErrors.js";
