#!/usr/bin/env python3
# Prints the README values table of charts/orloj from values.yaml (`# --` comments are the
# descriptions); with `check`, fails when charts/orloj/README.md misses a value. Needs PyYAML.
import sys, yaml, re, json
OPAQUE = {"resources", "podSecurityContext", "securityContext", "nodeSelector", "affinity", "podAnnotations",
          "podLabels", "annotations", "labels", "commonLabels", "livenessProbe", "readinessProbe"}
def leaves(node, prefix=""):
    for k, v in node.items():
        p = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and k not in OPAQUE:
            yield from leaves(v, p)
        else:
            yield p, v
values = yaml.safe_load(open("charts/orloj/values.yaml"))
# description: the `# --` comment above the key in values.yaml
lines = open("charts/orloj/values.yaml").read().splitlines()
desc = {}
stack = []
pending = []
for line in lines:
    m = re.match(r"^(\s*)# -- ?(.*)$", line)
    if m:
        pending = [m.group(2)]; continue
    m2 = re.match(r"^(\s*)# (.*)$", line)
    if m2 and pending:
        pending.append(m2.group(2)); continue
    m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
    if m:
        ind = len(m.group(1)) // 2
        stack = stack[:ind] + [m.group(2)]
        if pending:
            desc[".".join(stack)] = " ".join(pending)
        pending = []
if sys.argv[1:] == ["check"]:
    readme = open("charts/orloj/README.md").read()
    missing = [p for p, _ in leaves(values) if f"`{p}`" not in readme]
    if missing:
        print("README.md does not list:", ", ".join(missing)); sys.exit(1)
    print("ok: README lists every value"); sys.exit(0)
print("| Value | Default | Description |\n|---|---|---|")
for p, v in leaves(values):
    d = desc.get(p)
    if d is None:
        # probes: comment is on the first child
        parent = p
        d = ""
    dv = json.dumps(v, separators=(", ", ": ")) if not isinstance(v, str) else (f'"{v}"' if v == "" else v)
    print(f"| `{p}` | `{dv}` | {d} |")
