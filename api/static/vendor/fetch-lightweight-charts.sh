#!/usr/bin/env bash
# How the vendored charting library was fetched (run from the repository root):
# `npm pack` downloads the published package tarball from the npm registry; we keep its
# standalone production build and its license, and check the build's SHA-256.
set -euo pipefail
VERSION=5.2.1
SHA256=e21cc5caa0226ef30bd8549c50b9ef926615f2a4ee6b4e486353477a55f598cf
DEST=api/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "lightweight-charts@$VERSION" >/dev/null && tar xzf ./*.tgz)
cp "$work/package/dist/lightweight-charts.standalone.production.js" "$DEST/"
cp "$work/package/LICENSE" "$DEST/lightweight-charts.LICENSE"
echo "$SHA256  $DEST/lightweight-charts.standalone.production.js" | sha256sum --check
echo "lightweight-charts $VERSION" >"$DEST/lightweight-charts.VERSION"
