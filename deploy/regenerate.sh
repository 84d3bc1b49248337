#!/bin/sh
# Regenerates deploy/*.yaml from `picket manifests` (the single source).
# Run after changing agent/src/k8s/manifests.rs or rules/*.yaml; the test
# `k8s::manifests::tests::deploy_directory_is_in_sync` fails until you do.
set -eu
cd "$(dirname "$0")/.."
# The manifests do not need the kernel programs: skip their build.
export AYA_BUILD_SKIP="${AYA_BUILD_SKIP:-1}"
cargo run --quiet -p picket -- manifests > deploy/picket.yaml
cargo run --quiet -p picket -- manifests --containment > deploy/picket-containment.yaml
echo "regenerated deploy/picket.yaml and deploy/picket-containment.yaml"
