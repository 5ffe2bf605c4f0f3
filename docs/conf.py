"""Sphinx configuration of the sklmm documentation.

Build (warnings are errors, the gallery is executed)::

    bash docs/build.sh
"""

import os
import re
import sys
from pathlib import Path

import sklmm

sys.path.insert(0, str(Path(__file__).parent / "sphinxext"))  # gallery_order

# Gallery examples run in this process: plots go to the non-interactive backend.
os.environ.setdefault("MPLBACKEND", "Agg")

project = "sklmm"
author = "the sklmm developers"
copyright = "the sklmm developers"
release = sklmm.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "build.sh"]
root_doc = "index"
toc_object_entries_show_parents = "hide"  # "fit()", not "MixedLMRegressor.fit()"
default_role = "literal"  # `x` renders as code, as in the docstrings

# -- autodoc / autosummary / numpydoc --------------------------------------------
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False  # the class template lists the methods
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- sphinx-gallery ----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",  # execute every plot_*.py
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "doc_module": ("sklmm",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"sklmm": None},
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "only_warn_on_example_error": False,
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 1,
    "plot_gallery": "True",
}

# -- HTML ---------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklmm {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_sidebars = {"index": [], "getting_started": [], "limitations": [], "lme4_statsmodels": []}


# -- docstrings inherited from scikit-learn ------------------------------------------
# BaseEstimator's methods (set_fit_request, get_metadata_routing, ...) refer to labels and
# glossary terms of scikit-learn's own documentation; point them there instead.
SKLEARN_DOCS = "https://scikit-learn.org/stable"
_SKLEARN_REF = re.compile(r":ref:`([^`<]+?)\s*<metadata_routing>`")
_SKLEARN_TERM = re.compile(r":term:`([^`<]+?)(?:\s*<[^`>]+>)?`")


def _sklearn_crossrefs(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        line = _SKLEARN_REF.sub(rf"`\1 <{SKLEARN_DOCS}/metadata_routing.html>`__", line)
        lines[i] = _SKLEARN_TERM.sub(r"*\1*", line)


def setup(app):
    app.connect("autodoc-process-docstring", _sklearn_crossrefs)
