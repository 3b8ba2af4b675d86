import { describe, expect, it } from "vitest";
import { ConfigError } from "@filerelay/core";
import { parseTemplate, templateProblems, TEMPLATE_PLACEHOLDERS, type TemplateValues } from "./template.js";

const values = Object.fromEntries(TEMPLATE_PLACEHOLDERS.map((p) => [p, `<${p}>`])) as TemplateValues;

describe("FILENAME_TEMPLATE", () => {
  it("renders every placeholder, with or without spaces", () => {
    const t = parseTemplate(TEMPLATE_PLACEHOLDERS.map((p) => `{{.${p}}}`).join("_") + "{{ .Ext }}");
    expect(t.render(values)).toBe(TEMPLATE_PLACEHOLDERS.map((p) => `<${p}>`).join("_") + "<Ext>");
    expect(parseTemplate("{{.Source}}-{{.ID}}{{.Ext}}").render(values)).toBe("<Source>-<ID><Ext>");
    expect(parseTemplate("in/{{.RelDir}}/{{.Name}}.bak").render(values)).toBe("in/<RelDir>/<Name>.bak");
  });

  it("rejects unknown placeholders, stray braces and escaping literals", () => {
    expect(() => parseTemplate("{{.Nme}}{{.Ext}}")).toThrow(ConfigError);
    expect(templateProblems("{{.Nme}}")[0]).toMatch(/unknown placeholder \{\{\.Nme\}\}/);
    expect(templateProblems("{{Name}}")[0]).toMatch(/unknown placeholder/);
    expect(templateProblems("{{.Name}")[0]).toMatch(/unbalanced/);
    expect(templateProblems("/abs/{{.Name}}")).toContain("must be relative (no leading '/')");
    expect(templateProblems("../{{.Name}}")).toContain("'.' and '..' segments are not allowed");
    expect(templateProblems("a\\{{.Name}}")).toContain("backslashes and control characters are not allowed");
    expect(templateProblems("{{.Name}}/")).toContain("must end with a file name, not '/'");
    expect(templateProblems("{{.Date}}/{{.Name}}{{.Ext}}")).toEqual([]);
  });
});
