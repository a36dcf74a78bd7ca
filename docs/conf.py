"""Sphinx configuration for the dssim_mae_jax documentation.

Build with ``make docs`` (HTML in ``docs/_build/html``); CI builds with ``-W --keep-going``.

Why Sphinx + myst-nb (and not mkdocs): it is what optax, dm_pix and flax use, so the API pages
read like theirs; autodoc + napoleon render the Google-style docstrings as written; myst-nb
renders the committed notebooks' outputs without executing them; and ``-W`` turns every
unresolved reference, missing page or stale autodoc name into a build failure. The theme is
furo (light, no build step of its own).

Two things are generated at build time, into git-ignored folders of this source tree:

* ``api/<package>.rst``: one reference page per public package, listing exactly the names in
  that package's ``__all__`` (so a new public name appears, and a removed one disappears,
  without editing any page);
* ``notebooks/*.ipynb``: copies of the repository's ``notebooks/``, rendered by myst-nb with
  the outputs they were committed with (never executed here).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

from dssim_mae_jax._version import __version__  # noqa: E402

project = "dssim_mae_jax"
author = "dssim_mae_jax developers"
copyright = "2026, dssim_mae_jax developers"
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# Public packages, each documented from its __all__. A package listed here whose module does
# not exist (yet) is skipped with a note; one that exists but fails to import fails the build.
API_PACKAGES = (
    ("dssim_mae_jax", "Metrics and losses"),
    ("dssim_mae_jax.metrics", "Streaming metrics"),
    ("dssim_mae_jax.training", "Training"),
)

# Guide pages other work is adding: a toctree line naming one of these is dropped while its
# file does not exist (so the build passes before it lands and lists it once it does). Every
# other toctree entry must exist, and every page must be in a toctree (-W fails otherwise).
OPTIONAL_PAGES = {"ssim_derivatives", "evaluation", "predict", "pallas", "results_recipes"}

exclude_patterns = ["_build", "**/.ipynb_checkpoints", "figures/README.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Notebooks are shown with the outputs they were committed with.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 4
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The metric states document their `empty` keywords under "Options:", rendered like Args.
napoleon_custom_sections = [("Options", "params_style")]
autosummary_generate = False  # the pages are generated below, from __all__

html_theme = "furo"
html_title = f"dssim_mae_jax {release}"
html_static_path: list[str] = []
pygments_style = "friendly"


def _attribute_doc(package, name: str, obj: object) -> list[str]:
    """The ``#:`` comment or docstring of ``package.name`` in the private module defining it."""
    from sphinx.pycode import ModuleAnalyzer

    prefix = package.__name__ + "."
    for modname, module in sorted(sys.modules.items()):
        if modname.startswith(prefix) and getattr(module, name, None) is obj:
            doc = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", name))
            if doc:
                return list(doc)
    return []


def _data_entry(package, name: str, obj: object) -> list[str]:
    """A ``py:data`` entry: its attribute doc where it has one, and its value or keys."""
    lines = [f".. py:data:: {name}", f"   :module: {package.__name__}", ""]
    lines += [f"   {line}" if line else "" for line in _attribute_doc(package, name, obj)]
    if isinstance(obj, tuple | list):
        lines += ["", f"   Value: ``{obj!r}``", ""]
    elif hasattr(obj, "keys"):
        lines += ["", "   Keys: " + ", ".join(f"``{key!r}``" for key in obj.keys()), ""]
    return lines


def _api_page(modname: str, title: str) -> str:
    package = importlib.import_module(modname)
    names = list(package.__all__)
    heading = f"``{modname}``: {title}"
    lines = [heading, "=" * len(heading), ""]
    lines += [f".. automodule:: {modname}", "   :no-members:", ""]
    # The summary table lists functions and classes; constants follow it as a list (a
    # summary of a tuple or mapping would show its type's docstring).
    documented = [name for name in names if callable(getattr(package, name))]
    constants = [name for name in names if name not in documented]
    lines += [".. currentmodule:: " + modname, "", ".. autosummary::", ""]
    lines += [f"   {name}" for name in documented] + [""]
    if constants:
        lines += ["Constants: " + ", ".join(f":data:`{name}`" for name in constants), ""]
    for name in names:
        obj = getattr(package, name)
        lines += [name, "-" * len(name), ""]
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            lines += [f".. autoexception:: {name}", ""]
        elif inspect.isclass(obj) and issubclass(obj, tuple):
            # A NamedTuple: its fields are documented by the docstring's Attributes section.
            lines += [f".. autoclass:: {name}", ""]
        elif inspect.isclass(obj):
            lines += [f".. autoclass:: {name}", "   :members:", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {name}", ""]
        else:
            lines += _data_entry(package, name, obj)
    return "\n".join(lines) + "\n"


def _write_api_pages() -> None:
    out = DOCS / "api"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.rst"):
        stale.unlink()
    for modname, title in API_PACKAGES:
        if importlib.util.find_spec(modname) is None:
            print(f"docs: {modname} does not exist; its API page is skipped")
            continue
        (out / f"{modname}.rst").write_text(_api_page(modname, title))


def _copy_notebooks() -> None:
    out = DOCS / "notebooks"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.ipynb"):
        stale.unlink()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(notebook, out / notebook.name)


_write_api_pages()
_copy_notebooks()


def _drop_missing_optional_pages(app, docname, source) -> None:
    if docname != "index":
        return
    missing = {page for page in OPTIONAL_PAGES if not (DOCS / f"{page}.md").exists()}
    lines = source[0].splitlines()
    source[0] = "\n".join(line for line in lines if line.strip() not in missing) + "\n"


def _dataclass_fields(app, what, name, obj, options, lines) -> None:
    """Lists a dataclass's fields whose metadata holds help text (training.Config's do)."""
    import dataclasses

    if what != "class" or not dataclasses.is_dataclass(obj):
        return
    fields = [f for f in dataclasses.fields(obj) if f.metadata.get("help")]
    if not fields:
        return
    lines += ["", ".. list-table:: Fields", "   :header-rows: 1", "   :widths: 20 20 60", ""]
    lines += ["   * - field", "     - default", "     - meaning"]
    for field in fields:
        if field.default is not dataclasses.MISSING:
            default = f"``{field.default!r}``"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"``{field.default_factory()!r}``"
        else:
            default = "(required)"
        help_text = " ".join(str(field.metadata["help"]).split())
        lines += [f"   * - ``{field.name}``", f"     - {default}", f"     - {help_text}"]
    lines.append("")


def setup(app):
    app.connect("source-read", _drop_missing_optional_pages)
    app.connect("autodoc-process-docstring", _dataclass_fields)
