#!/usr/bin/env bash
# The main job: fine-tune MobileNetV2 (ImageNet weights, offline) on Animal-MNIST and print the test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/transferkit fit examples/animal_mnist.yaml --overwrite "$@"
