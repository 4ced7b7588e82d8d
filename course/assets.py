"""The browser libraries the site and the slides need, copied from installed Python packages.

Nothing is fetched from the internet and nothing is kept in the repository: MathJax 2.7 comes
from `jupyter-server-mathjax` (the Jupyter project's offline MathJax), reveal.js from
`sphinx-revealjs`. Only the parts the pages use are copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupyter_server_mathjax
import sphinx_revealjs

MATHJAX_SOURCE = Path(jupyter_server_mathjax.__file__).parent / "static"
# The package is the Jupyter project's trimmed MathJax 2.7.9: TeX input and HTML-CSS output
# combined in config/TeX-AMS-MML_HTMLorMML-full.js, drawn with the STIX-Web fonts it ships.
# Copied: what that configuration loads (about 2.5 MB of the package's 12); the a11y explorer
# (3.7 MB) is left out, the AssistiveMML extension that gives screen readers MathML is kept.
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full"
MATHJAX_PARTS = [
    "MathJax.js",
    "LICENSE",
    f"config/{MATHJAX_CONFIG}.js",
    "extensions",
    "jax/input/TeX",
    "jax/element",
    "jax/output/HTML-CSS",
    "fonts/HTML-CSS/STIX-Web",
]
# The HTML-CSS settings that make MathJax use the fonts the package has (and no image fonts).
MATHJAX_FONTS = {
    "availableFonts": ["STIX-Web"],
    "preferredFont": "STIX-Web",
    "webFont": "STIX-Web",
    "imageFont": None,
}
REVEAL_SOURCE = Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"
REVEAL_PARTS = [
    "LICENSE",
    "dist/reveal.js",
    "dist/reveal.css",
    "dist/reset.css",
    "dist/theme/white.css",
    "dist/theme/fonts/source-sans-pro",
    "plugin/notes",
]


MATHJAX_LEFT_OUT = shutil.ignore_patterns("a11y")


def _copy_parts(source_root: Path, target_root: Path, parts: list[str], ignore=None) -> None:
    for part in parts:
        source, target = source_root / part, target_root / part
        if not source.exists():
            raise FileNotFoundError(
                f"{source} is missing from its installed package; reinstall it "
                "(python -m pip install -r requirements.txt)"
            )
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def copy_mathjax(target: Path) -> None:
    """Copy MathJax (MathJax.js and what its TeX-to-HTML configuration loads) into `target`."""
    _copy_parts(MATHJAX_SOURCE, Path(target), MATHJAX_PARTS, ignore=MATHJAX_LEFT_OUT)


def copy_reveal(target: Path) -> None:
    """Copy reveal.js (script, styles, the white theme with its fonts, the notes plugin)."""
    _copy_parts(REVEAL_SOURCE, Path(target), REVEAL_PARTS)
