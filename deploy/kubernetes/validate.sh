#!/usr/bin/env bash
# Validate the Kubernetes manifests offline, with no cluster:
#
#   1. `kubectl kustomize` renders the base and every overlay (falls back to a
#      standalone `kustomize build`).
#   2. `kubernetes-validate --strict` checks every rendered object, and the Secret
#      template, against the Kubernetes OpenAPI schemas bundled in the package.
#      Strict mode rejects unknown fields, so a misspelt key fails instead of
#      being silently dropped by the API server. The check runs against the oldest
#      supported Kubernetes version and every newer one the package ships.
#   3. Invariants that no schema can express (grace period vs. shutdown flags,
#      hardening, probes, Service/port wiring, HPA vs. PDB).
#
# Exits non-zero if anything fails. A schema-validation WARN (an unknown
# kind/apiVersion) counts as a failure too.
#
# Environment:
#   K8S_VERSIONS   space-separated versions to validate against
#                  (default: every bundled version from K8S_MIN_VERSION on)
#   K8S_MIN_VERSION oldest supported version (default 1.27.0: native gRPC probes GA)
#   KV_VERSION     kubernetes-validate version to install (default 1.37.0)
#   KV_VENV        where to install it (default /tmp/token-authority-kubernetes-validate)
#   KV_PYTHON      a python that already has kubernetes_validate (skips the venv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_MIN_VERSION="${K8S_MIN_VERSION:-1.27.0}"
KV_VERSION="${KV_VERSION:-1.37.0}"
KV_VENV="${KV_VENV:-/tmp/token-authority-kubernetes-validate}"

work="$(mktemp -d "${TMPDIR:-/tmp}/token-authority-validate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

fail() { echo "validate.sh: FAIL: $*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------
render() { # render DIR > FILE
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then
    kustomize build "$1"
  else
    fail "neither kubectl nor kustomize is installed"
  fi
}

if [[ -n "${KV_PYTHON:-}" ]]; then
  py="$KV_PYTHON"
elif python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  py="$(command -v python3)"
else
  py="$KV_VENV/bin/python"
  if ! "$py" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    echo "== installing kubernetes-validate==$KV_VERSION into $KV_VENV"
    python3 -m venv "$KV_VENV" || fail "cannot create a venv at $KV_VENV (python3-venv missing?)"
    "$KV_VENV/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==$KV_VERSION" \
      || fail "pip install kubernetes-validate==$KV_VERSION failed"
  fi
fi
echo "== kubernetes-validate $("$py" -m kubernetes_validate --version) ($py)"

if [[ -n "${K8S_VERSIONS:-}" ]]; then
  read -r -a versions <<<"$K8S_VERSIONS"
else
  # Every schema version bundled in the package, from the minimum on.
  mapfile -t versions < <("$py" - "$K8S_MIN_VERSION" <<'PY'
import sys
import kubernetes_validate.utils as u
key = lambda v: tuple(int(x) for x in v.split("."))
lo = key(sys.argv[1])[:2]
for v in sorted(set(u.all_versions()), key=key):
    if key(v)[:2] >= lo:
        print(v + ".0" if v.count(".") == 1 else v)
PY
  )
fi
[[ ${#versions[@]} -gt 0 ]] || fail "no Kubernetes versions to validate against"
echo "== Kubernetes versions: ${versions[*]}"

# --- 1. render ------------------------------------------------------------------
targets=("$here/base")
for d in "$here"/overlays/*/; do
  targets+=("${d%/}")
done

rendered=()
for t in "${targets[@]}"; do
  name="${t#"$here"/}"
  out="$work/${name//\//_}.yaml"
  render "$t" >"$out" || fail "kustomize could not render $name"
  n="$(grep -c '^kind:' "$out" || true)"
  echo "== rendered $name: $n objects"
  rendered+=("$out")
done

# --- 2. schemas -----------------------------------------------------------------
status=0
schema_check() { # schema_check FILE LABEL
  local file="$1" label="$2" v log ok=() bad=()
  log="$work/kv.log"
  for v in "${versions[@]}"; do
    if ! "$py" -m kubernetes_validate --strict -k "$v" "$file" >"$log" 2>&1; then
      status=1
    fi
    # WARN = no schema for a kind/apiVersion (a typo or a removed API). That is a failure here.
    if grep -Eq '^(ERROR|WARN|FATAL)' "$log"; then
      status=1
      grep -E '^(ERROR|WARN|FATAL)' "$log" | sed "s|$work/||" >&2
      bad+=("$v")
    else
      ok+=("$v")
    fi
  done
  echo "   $label: $(grep -c '^INFO' "$log") objects; valid against ${#ok[@]} versions (${ok[*]:-none})"
  [[ ${#bad[@]} -eq 0 ]] || echo "   $label: INVALID against ${bad[*]}" >&2
}

echo "== schema validation (strict)"
for i in "${!targets[@]}"; do
  schema_check "${rendered[$i]}" "${targets[$i]#"$here"/}"
done
schema_check "$here/base/secret.example.yaml" "base/secret.example.yaml"
[[ $status -eq 0 ]] || fail "schema validation"

# --- 3. invariants --------------------------------------------------------------
echo "== invariants"
"$py" - "${rendered[@]}" <<'PY' || fail "invariants"
"""Checks the schemas cannot express. Each failure names the object and the rule."""
import re
import sys

import yaml

errors = []


def check(ok, where, rule):
    if not ok:
        errors.append(f"{where}: {rule}")


def flag(args, name):
    """Value of --name=V or --name V in a container's args, or None."""
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


for path in sys.argv[1:]:
    label = path.rsplit("/", 1)[-1]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    # The optional Redis of components/redis (shared rate limits) is checked
    # on its own: only token-authority pods may reach it. The rules below are
    # the token-authority server's.
    component = lambda d: d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")
    redis = [d for d in docs if component(d) == "redis"]
    if redis:
        kinds = {d["kind"] for d in redis}
        check({"Deployment", "Service", "NetworkPolicy"} <= kinds, label, "Redis comes with its Service and NetworkPolicy")
        for np in (d for d in redis if d["kind"] == "NetworkPolicy"):
            froms = [f for r in np["spec"].get("ingress", []) for f in r.get("from", [])]
            check(froms and all(f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "server"
                                for f in froms), f"{label}: NetworkPolicy/{np['metadata']['name']}",
                  "only token-authority server pods reach Redis")
    docs = [d for d in docs if component(d) != "redis"]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    deps = by_kind.get("Deployment", [])
    check(len(deps) == 1, label, "exactly one Deployment")
    if not deps:
        continue
    dep = deps[0]
    dn = f"{label}: Deployment/{dep['metadata']['name']}"
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    c = pod["containers"][0]
    args = c.get("args", [])

    # Rollouts never reduce capacity.
    ru = spec["strategy"]["rollingUpdate"]
    check(ru["maxUnavailable"] in (0, "0", "0%"), dn, "rollingUpdate.maxUnavailable must be 0")

    # Shutdown: the kubelet must not SIGKILL a pod that is still draining.
    delay, grace = flag(args, "shutdown-delay"), flag(args, "shutdown-grace")
    check(delay is not None and grace is not None, dn, "--shutdown-delay and --shutdown-grace are set")
    if delay is not None and grace is not None:
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        check(tgps > int(delay) + int(grace), dn,
              f"terminationGracePeriodSeconds ({tgps}) > --shutdown-delay + --shutdown-grace ({delay}+{grace})")

    # Hardening (Pod Security Standards "restricted" and more).
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(pod.get("automountServiceAccountToken") is False, dn, "automountServiceAccountToken: false")
    check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, dn, "runAsNonRoot")
    check((csc.get("runAsUser") or psc.get("runAsUser")) == 65532, dn, "runAsUser 65532 (the image's user)")
    check(csc.get("readOnlyRootFilesystem") is True, dn, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, dn, "allowPrivilegeEscalation: false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], dn, "capabilities drop [ALL]")
    check("add" not in csc.get("capabilities", {}), dn, "no added capabilities")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    check(seccomp == "RuntimeDefault", dn, "seccompProfile RuntimeDefault")

    # Secret as files, updatable in place: never subPath, never env values.
    for m in c.get("volumeMounts", []):
        check("subPath" not in m and "subPathExpr" not in m, dn,
              f"volumeMount {m['name']}: no subPath (kubelet never updates subPath mounts)")
    for e in c.get("env", []):
        check("secretKeyRef" not in e.get("valueFrom", {}), dn,
              f"env {e['name']}: secrets as files (*_FILE), not env values")
    check(any(e["name"] == "SHENGWANG_APP_CERTIFICATE_FILE" for e in c.get("env", [])), dn,
          "SHENGWANG_APP_CERTIFICATE_FILE is set")
    secret_vols = [v for v in pod.get("volumes", []) if "secret" in v]
    check(secret_vols, dn, "the certificate Secret is mounted as a volume")
    for s in by_kind.get("Secret", []):
        check(not re.search(r"-[a-z0-9]{10}$", s["metadata"]["name"]), f"{label}: Secret/{s['metadata']['name']}",
              "no hash suffix on the credentials Secret (rotation must update it in place)")

    # Probes: native gRPC on the health service; readiness on the TokenService.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check("grpc" in c.get(probe, {}), dn, f"{probe} uses the native grpc probe")
    check(c.get("readinessProbe", {}).get("grpc", {}).get("service") == "agora.token.v1.TokenService", dn,
          "readinessProbe asks for service agora.token.v1.TokenService")
    check(c.get("livenessProbe", {}).get("grpc", {}).get("service", "") == "", dn,
          "livenessProbe asks for service \"\" (process up)")

    # Resources: requests for scheduling and the HPA, a memory limit as a safety net.
    res = c.get("resources", {})
    check("cpu" in res.get("requests", {}), dn, "cpu request (the HPA's utilisation base)")
    check("memory" in res.get("requests", {}), dn, "memory request")
    check("memory" in res.get("limits", {}), dn, "memory limit")

    # Spread across nodes.
    tsc = pod.get("topologySpreadConstraints", [])
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    check(any(t["topologyKey"] == "kubernetes.io/hostname" for t in tsc) or anti, dn,
          "replicas are spread across nodes")

    # Services select the pods and point at ports the container has.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for svc in by_kind.get("Service", []):
        sn = f"{label}: Service/{svc['metadata']['name']}"
        sel = svc["spec"].get("selector", {})
        check(sel and all(pod_labels.get(k) == v for k, v in sel.items()), sn, "selector matches the pod labels")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            check(tp in ports or tp in ports.values(), sn, f"port {p['name']}: targetPort {tp} exists on the container")
        if svc["spec"].get("clusterIP") == "None":
            check(not svc["spec"].get("publishNotReadyAddresses", False), sn, "headless Service publishes ready pods only")

    # HPA: targets this Deployment, keeps two or more, and owns the replica count.
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    check(len(hpas) == 1, label, "exactly one HorizontalPodAutoscaler")
    for h in hpas:
        hn = f"{label}: HorizontalPodAutoscaler/{h['metadata']['name']}"
        check(h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], hn, "targets the Deployment")
        min_r = h["spec"].get("minReplicas", 1)
        check(min_r >= 2, hn, "minReplicas >= 2")
        check(h["spec"]["maxReplicas"] >= min_r, hn, "maxReplicas >= minReplicas")
        check("replicas" not in spec, dn, "no spec.replicas (the HPA owns it; apply would reset it)")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            pn = f"{label}: PodDisruptionBudget/{pdb['metadata']['name']}"
            ma = pdb["spec"].get("minAvailable")
            check(isinstance(ma, int) and 1 <= ma < min_r, pn,
                  f"1 <= minAvailable ({ma}) < HPA minReplicas ({min_r}), so a node drain can proceed")
            sel = pdb["spec"]["selector"]["matchLabels"]
            check(all(pod_labels.get(k) == v for k, v in sel.items()), pn, "selector matches the pod labels")

    # NetworkPolicy: selects the pods, restricts both directions.
    nps = by_kind.get("NetworkPolicy", [])
    check(nps, label, "a NetworkPolicy")
    for np in nps:
        nn = f"{label}: NetworkPolicy/{np['metadata']['name']}"
        sel = np["spec"]["podSelector"].get("matchLabels", {})
        check(sel and all(pod_labels.get(k) == v for k, v in sel.items()), nn, "podSelector matches the pod labels")
        check(set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}, nn, "policyTypes Ingress and Egress")
        for rule in np["spec"].get("ingress", []):
            check(rule.get("from") and rule.get("ports"), nn, "every ingress rule names sources and ports")

    print(f"   {label}: invariants hold" if not errors else f"   {label}: checked")

if errors:
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    sys.exit(1)
PY

echo "== OK: all manifests render, validate and keep their invariants"
