#!/usr/bin/env bash
# Vendors the strict plotly.js bundle (no eval, for the Content-Security-Policy) of the version the
# installed plotly.py targets, from the npm registry's plotly.js-strict-dist-min package, and writes
# the stylesheets plotly.js would inject (scripts/plotly_css.py). The figures are validated by
# plotly.py against that version's schema, so the page must draw them with the same version:
# tests/test_plotly_css.py fails when the two differ.
#
#   scripts/vendor_plotly.sh            # the version plotly.py targets
#   scripts/vendor_plotly.sh 4.1.1      # a given version
#
# npm pack checks the tarball against the registry's integrity hash. A new version also needs
# templates/_plotly.html, tests/test_plotly_css.py and the README's CSP note to name its files.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

version=${1:-$("$VENV/bin/python" -c 'import plotly.offline; print(plotly.offline.get_plotlyjs_version())')}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "plotly.js-strict-dist-min@$version from the npm registry"
(cd "$work" && npm pack --silent "plotly.js-strict-dist-min@$version" >/dev/null)
tar -xzf "$work/plotly.js-strict-dist-min-$version.tgz" -C "$work"
head -c 200 "$work/package/plotly-strict.min.js" | grep -q "v$version" || die "the bundle does not say v$version"

cp "$work/package/plotly-strict.min.js" "static/vendor/plotly-strict-$version.min.js"
cp "$work/package/LICENSE" static/vendor/plotly-LICENSE.txt
"$VENV/bin/python" scripts/plotly_css.py "static/vendor/plotly-strict-$version.min.js" "static/vendor/plotly-$version"
sha256sum "static/vendor/plotly-strict-$version.min.js" >&2
