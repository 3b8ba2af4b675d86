import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./support/index.js";

/**
 * The kustomization really builds: `kubectl kustomize deploy/k8s` (kustomize
 * as shipped in kubectl) renders every listed resource into the filerelay
 * namespace with the images the kustomization pins. Skipped where kubectl is
 * not installed.
 */

interface Rendered {
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: { template?: { spec?: { containers?: { image: string }[] } } };
}

const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
const haveKubectl = kubectl.status === 0;

describe("deploy/k8s with kustomize", () => {
  it.runIf(haveKubectl)("kubectl kustomize renders every resource, namespaced, with the pinned images", () => {
    const run = spawnSync("kubectl", ["kustomize", join(repoRoot, "deploy/k8s")], { encoding: "utf8" });
    expect(run.status, run.stderr).toBe(0);
    const docs = parseAllDocuments(run.stdout).map((d) => d.toJS() as Rendered);
    const kustomization = parseAllDocuments(
      readFileSync(join(repoRoot, "deploy/k8s/kustomization.yaml"), "utf8"),
    )[0]!.toJS() as { resources: string[]; images: { name: string; newTag?: string }[] };
    // As many resources as the listed files declare.
    const declared = kustomization.resources.flatMap((f) =>
      parseAllDocuments(readFileSync(join(repoRoot, "deploy/k8s", f), "utf8")).map((d) => d.toJS() as Rendered),
    );
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual(
      declared.map((d) => `${d.kind}/${d.metadata.name}`).sort(),
    );
    for (const d of docs.filter((x) => x.kind !== "Namespace")) {
      expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe("filerelay");
      expect(d.metadata.labels?.["app.kubernetes.io/managed-by"]).toBe("kustomize");
    }
    const images = docs.flatMap((d) => d.spec?.template?.spec?.containers?.map((c) => c.image) ?? []);
    expect(images.length).toBeGreaterThan(0);
    // Every image can be pointed at a registry from the kustomization, and a pinned tag is applied.
    const pinned = new Map(kustomization.images.map((i) => [i.name, i.newTag]));
    for (const image of images) {
      const [name, tag] = image.split(":");
      expect(pinned.has(name ?? ""), `${image} has an images: entry`).toBe(true);
      const wanted = pinned.get(name ?? "");
      if (wanted !== undefined) expect(tag, image).toBe(wanted);
    }
  });
});
