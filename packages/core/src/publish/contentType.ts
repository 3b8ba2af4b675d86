import mime from "mime";

export const DEFAULT_CONTENT_TYPE = "application/octet-stream";

/** ce-content-type from a file name's extension (DESIGN §3): the one lookup every source uses. */
export function contentTypeFor(name: string): string {
  return mime.getType(name) ?? DEFAULT_CONTENT_TYPE;
}
