"""Class names in any script: the confusion matrix draws them legibly and never warns about missing glyphs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib import font_manager

from transferkit.evaluate import plots
from transferkit.evaluate.plots import confusion_matrix_png, label_font

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _draw(classes: list[str], path: Path) -> list[warnings.WarningMessage]:
    cm = np.diag(np.arange(1, len(classes) + 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        confusion_matrix_png(cm, classes, path, title=f"Confusion matrix ({classes[0]})")
    assert path.read_bytes()[:8] == PNG_MAGIC
    return caught


def _glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def _has_cjk_font() -> bool:
    return any(0x732B in plots._charmap(str(f.fname)) for f in plots._candidate_fonts())


def test_chinese_and_cyrillic_class_names_draw_without_a_glyph_warning(tmp_path: Path) -> None:
    caught = _draw(["猫", "狗", "кот"], tmp_path / "cm.png")
    assert _glyph_warnings(caught) == []
    family, drawable = label_font(["猫", "狗", "кот"])
    assert drawable[2], "Cyrillic is in the default font"
    if _has_cjk_font():  # a CJK font is installed: every name is drawn with it
        assert family is not None and all(drawable)
    else:  # none is: the Chinese names are numbered, not drawn as empty boxes
        assert drawable[:2] == [False, False]


def test_without_a_font_for_the_names_they_are_numbered_and_the_axis_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "_candidate_fonts", lambda: [])  # as on a machine with no font that has them
    assert label_font(["猫", "cat"]) == (None, [False, True])
    seen: dict[str, list[str]] = {}
    real_savefig = plots.Figure.savefig

    def spy(fig, *args, **kwargs):  # noqa: ANN001, ANN202 - records the drawn tick labels
        ax = fig.axes[0]
        seen["x"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["xlabel"] = [ax.get_xlabel()]
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(plots.Figure, "savefig", spy)
    assert _glyph_warnings(_draw(["猫", "cat", "狗"], tmp_path / "cm.png")) == []
    assert seen["x"] == ["#0", "cat", "#2"]
    assert "#k" in seen["xlabel"][0] and "confusion_matrix.json" in seen["xlabel"][0]


def test_a_name_the_default_font_lacks_is_drawn_with_an_installed_font_that_has_it(tmp_path: Path) -> None:
    default = plots._charmap(plots._default_font_path())
    for entry in plots._candidate_fonts():  # any installed font with a letter the default font lacks
        extra = sorted(c for c in plots._charmap(str(entry.fname)) - default if chr(c).isalpha())
        if extra:
            break
    else:
        pytest.skip("every installed font's letters are in the default font")
    name = chr(extra[0])
    family, drawable = label_font([name, "cat"])
    assert family is not None and drawable == [True, True]
    path = font_manager.findfont(font_manager.FontProperties(family=family[-1]), fallback_to_default=False)
    assert extra[0] in plots._charmap(str(getattr(path, "path", path)))
    assert _glyph_warnings(_draw([name, "cat"], tmp_path / "cm.png")) == []
