"""Recommended recipes, chosen by measurement, that ``transferkit methods`` prints under the list of methods.

Each entry names the setting, the recipe and the example config that runs it, and points at the BENCHMARKS.md
section whose figures chose it; change an entry only with new figures there. Free of torch and of the methods'
modules, so listing them costs nothing.
"""

from __future__ import annotations

#: setting -> the recipe, with the example that runs it and the figures that chose it.
RECIPES: dict[str, str] = {
    "domain adaptation, images": (
        "an adversarial method (dann or cdan): examples/mnist_to_mnist_m.yaml; figures in "
        "BENCHMARKS.md 'Domain adaptation and source-sample selection (issue 5)' and 'DA against peers'"
    ),
    "domain adaptation, text": (
        "probe on frozen minilm-l6 features trained on the source alone, no adaptation term: "
        "examples/rotten_comedy_to_thriller.yaml; source selection, self-training, DANN and CDAN on the frozen "
        "embedding stayed within the seed noise of it or below, DANN on a fine-tuned MiniLM lost to it "
        "(BENCHMARKS.md 'Domain adaptation for text (issue 16, item 5)')"
    ),
}
