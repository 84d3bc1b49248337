#!/bin/sh
# Validates the manifests in deploy/ against the Kubernetes OpenAPI schemas
# (strict: unknown fields are errors). Works offline: the kubernetes-validate
# package ships the schemas. Install it with `pip install kubernetes-validate`.
#
# Usage: deploy/validate.sh            (versions in K8S_VERSIONS)
#        K8S_VERSIONS="1.34.0" deploy/validate.sh
set -eu
cd "$(dirname "$0")"

# 1.30 is the oldest with securityContext.appArmorProfile; 1.34 is the API
# version the agent is built against (k8s-openapi feature v1_34).
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.34.0 1.37.0}"
KV="${KUBERNETES_VALIDATE:-kubernetes-validate}"

if ! command -v "$KV" >/dev/null 2>&1; then
    echo "validate.sh: '$KV' not found; install it with: pip install kubernetes-validate" >&2
    exit 2
fi

for version in $K8S_VERSIONS; do
    "$KV" --kubernetes-version "$version" --strict --quiet picket.yaml picket-containment.yaml
    echo "deploy/: picket.yaml and picket-containment.yaml are valid for Kubernetes $version"
done
