"""plotly.js's injected styles as static stylesheets: what scripts/plotly_css.py writes from the
vendored bundle, linked under the ids that make plotly.js inject nothing."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

ROOT = Path(settings.BASE_DIR)
VENDOR = ROOT / "static" / "vendor"
BUNDLE = VENDOR / "plotly-strict-4.1.1.min.js"


def plotly_css():
    spec = importlib.util.spec_from_file_location("plotly_css", ROOT / "scripts" / "plotly_css.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_stylesheets_are_what_the_script_writes_from_the_bundle():
    written = plotly_css().stylesheets(BUNDLE.read_text(encoding="utf-8"), str(VENDOR / "plotly-4.1.1"))
    assert len(written) == 2
    for name, content in written.items():
        assert (VENDOR / name).read_text(encoding="utf-8") == content, f"run scripts/plotly_css.py ({name})"


def test_the_stylesheets_hold_plotlys_rules_with_its_selectors_expanded():
    css = (VENDOR / "plotly-4.1.1.css").read_text(encoding="utf-8")
    assert ".js-plotly-plot .plotly .modebar {position:absolute;" in css
    assert ".plotly-notifier .notifier-note {" in css
    assert not re.search(r"(^|,)\s*[XY][ ,.{]", css, re.MULTILINE)  # no template letter left


def test_the_template_links_each_stylesheet_under_the_id_the_bundle_looks_for():
    bundle = BUNDLE.read_text(encoding="utf-8")
    template = (ROOT / "templates" / "_plotly.html").read_text(encoding="utf-8")
    assert 'id="plotly.js-style-global" class="no-inline-styles"' in template
    assert '"plotly.js-style-"+e,n=document.getElementById(i);if(!(n&&n.matches(".no-inline-styles"))' in bundle
    for element_id in plotly_css().blocks(bundle):
        assert f'id="{element_id}" href="{{% static \'vendor/plotly-4.1.1-{element_id}.css\' %}}"' in template


def test_the_vendored_bundle_is_the_plotly_js_version_plotly_py_validates_figures_for():
    # plotly.py checks each figure against its plotly.js version's schema; the page must draw it
    # with that version (scripts/vendor_plotly.sh vendors it).
    import plotly.offline

    version = plotly.offline.get_plotlyjs_version()
    assert BUNDLE.name == f"plotly-strict-{version}.min.js"
    assert f"plotly.js (strict - minified) v{version}\n" in BUNDLE.read_text(encoding="utf-8")[:200]
    assert f"vendor/plotly-strict-{version}.min.js" in (ROOT / "templates" / "_plotly.html").read_text(encoding="utf-8")


@pytest.mark.django_db
def test_the_policy_allows_no_inline_style():
    response = Client().get("/accounts/login/")
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part.strip())
    assert policy["style-src"] == "'self'"
    assert "unsafe-inline" not in response["Content-Security-Policy"]
