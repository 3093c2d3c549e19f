#!/usr/bin/env bash
# Check the Helm chart offline:
#   1. helm lint --strict (values.yaml against values.schema.json, template errors, warnings fail);
#   2. helm template with every helm/vitbench/ci/*.yaml values file, each manifest validated with
#      kubernetes-validate --strict for Kubernetes 1.30.0 (oldest supported) and 1.37.0 (newest schema);
#   3. values that break the schema (tests/deploy/chart-values/bad-*.yaml) must be refused by
#      `helm install --dry-run=client` (the install-time check) and by `helm template`.
# Needs helm (scripts/install-helm.sh .tools) and kubernetes-validate on PATH, or HELM / KUBERNETES_VALIDATE.
set -euo pipefail

cd "$(dirname "$0")/.."
CHART=helm/vitbench
HELM="${HELM:-$(command -v helm || echo .tools/helm)}"
KV="${KUBERNETES_VALIDATE:-$(command -v kubernetes-validate || echo .venv/bin/kubernetes-validate)}"
VERSIONS=(1.30.0 1.37.0)

for tool in "$HELM" "$KV"; do
    [[ -x "$tool" ]] || { echo "error: $tool not found (run: bash scripts/install-helm.sh .tools; make venv)" >&2; exit 2; }
done

# Keep helm's cache/config out of $HOME.
export HELM_CACHE_HOME="$PWD/.helm/cache" HELM_CONFIG_HOME="$PWD/.helm/config" HELM_DATA_HOME="$PWD/.helm/data"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail=0

echo "== helm lint --strict $CHART"
"$HELM" lint --strict "$CHART"
for values in "$CHART"/ci/*.yaml; do
    "$HELM" lint --strict "$CHART" -f "$values" >/dev/null || { echo "FAIL: helm lint --strict -f $values" >&2; fail=1; }
done

for values in "$CHART"/ci/*.yaml; do
    name="$(basename "$values" .yaml)"
    out="$work/$name.yaml"
    "$HELM" template vitbench "$CHART" -f "$values" --namespace vitbench --kube-version 1.30.0 >"$out"
    kinds="$(grep -E '^kind: ' "$out" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}')"
    echo "== $name: ${kinds%, }"
    for version in "${VERSIONS[@]}"; do
        # Flags before file names; a kind without a bundled schema (ServiceMonitor) is reported and skipped.
        if ! "$KV" --strict -k "$version" --quiet "$out"; then
            echo "FAIL: $name does not validate against Kubernetes $version" >&2
            fail=1
        fi
    done
done

# expect_jobs VALUES TEMPLATE N WHAT: helm/vitbench/ci/VALUES renders exactly N Jobs from templates/TEMPLATE.
expect_jobs() {
    local values="$1" template="$2" want="$3" what="$4" got
    got="$("$HELM" template vitbench "$CHART" -f "$CHART/ci/$values" -s "templates/$template" \
        | grep -c '^kind: Job$' || true)"
    if [[ "$got" != "$want" ]]; then
        echo "FAIL: $values rendered $got $what, expected $want" >&2
        fail=1
    else
        echo "== $values: $want $what"
    fi
}
# One Job per init when the benchmark is enabled (the ci file lists five inits).
expect_jobs benchmark-values.yaml benchmark-jobs.yaml 5 "benchmark Jobs (one per init)"
# One pre-training Job (component pretraining) from the pretrain section.
expect_jobs pretrain-values.yaml pretrain-job.yaml 1 "pre-training Job(s)"

for bad in tests/deploy/chart-values/bad-*.yaml; do
    for cmd in "install vitbench $CHART --dry-run=client" "template vitbench $CHART"; do
        # shellcheck disable=SC2086
        if "$HELM" $cmd -f "$bad" >"$work/out" 2>"$work/err"; then
            echo "FAIL: helm ${cmd%% *} accepted $bad, which breaks values.schema.json" >&2
            fail=1
        elif ! grep -q "don't meet the specifications of the schema" "$work/err"; then
            echo "FAIL: helm ${cmd%% *} refused $bad for another reason:" >&2
            cat "$work/err" >&2
            fail=1
        fi
    done
    echo "== refused as it should be: $bad ($(grep -m1 -E "^- at" "$work/err" || true))"
done

if [[ "$fail" != 0 ]]; then
    echo "chart check FAILED" >&2
    exit 1
fi
echo "chart check passed"
