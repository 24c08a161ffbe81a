#!/usr/bin/env python3
"""Checks the Kubernetes manifests of deploy/k8s offline.

1. Every object validates, strictly (no unknown field), against the
   Kubernetes schemas that `kubernetes-validate` ships (no cluster needed).
   Objects of operators' CRDs (CloudNativePG) are skipped: their schemas
   are not Kubernetes's.
2. Every pod template passes the "restricted" Pod Security Standard: runs
   as non-root, no privilege escalation, every capability dropped (only
   NET_BIND_SERVICE may be added back), a RuntimeDefault or Localhost
   seccomp profile, no host namespaces, ports or paths, only the volume
   types the profile allows; plus a read-only root filesystem.
Exits non-zero naming each problem.
"""
import re
import sys
from pathlib import Path

import kubernetes_validate
import yaml

KUBERNETES = "1.30.0"
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}


def pod_spec(obj):
    kind = obj.get("kind")
    spec = obj.get("spec", {})
    if kind == "Pod":
        return spec
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return spec.get("template", {}).get("spec")
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return None


def restricted(name, spec):
    problems = []
    pod = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{name}: {key} is set")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"{name}: volume {v['name']} of type {sorted(kinds)}")
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    for c in containers:
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {})
        nonroot = sc.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if nonroot is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{where}: runs as user 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps['add']}")
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: the root filesystem is writable")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                problems.append(f"{where}: hostPort {p['hostPort']}")
        image = c.get("image", "")
        if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
            problems.append(f"{where}: image {image!r} is not pinned")
    return problems


def main():
    root = Path(__file__).resolve().parent / "k8s"
    problems, checked = [], 0
    for path in sorted(root.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            name = f"{path.name}: {obj.get('kind')} {obj.get('metadata', {}).get('name')}"
            if "." in obj.get("apiVersion", "").split("/")[0] and not obj["apiVersion"].startswith(
                ("apps/", "batch/", "policy/", "networking.k8s.io/", "autoscaling/")
            ):
                print(f"skipped (custom resource): {name}")
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{name}: {e.message} at {'/'.join(map(str, e.path))}")
            except Exception as e:  # unknown kind or version
                problems.append(f"{name}: {e}")
            spec = pod_spec(obj)
            if spec is not None:
                problems += restricted(name, spec)
            checked += 1
    # The image is built from base images pinned by digest, not by a tag
    # that can move under the same name.
    dockerfile = Path(__file__).resolve().parent / "Dockerfile"
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM ") and not re.search(r"@sha256:[0-9a-f]{64}\b", line):
            problems.append(f"Dockerfile: {line!r} is not pinned by digest")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    print(f"{checked} objects checked against Kubernetes {KUBERNETES}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
