#!/usr/bin/env bash
# Refetches the builds the GraphiQL page is made of from the npm registry, at
# the versions pinned below, into assets/graphiql/, and checks them against
# assets/graphiql/SHA256SUMS (npm itself checks each tarball against the
# registry's integrity hash). The files are embedded in the binary by
# src/http/graphiql.rs, whose file names carry the same versions.
#
#   scripts/update-graphiql.sh           refetch and check (fails on any difference)
#   scripts/update-graphiql.sh --write   after changing a version: refetch and
#                                        rewrite SHA256SUMS (review the diff, then
#                                        update the names in src/http/graphiql.rs)
set -euo pipefail
cd "$(dirname "$0")/.."

GRAPHIQL=3.9.0 # the last major with a UMD build (4 and later are ES modules)
REACT=18.3.1   # GraphiQL 3 takes React 16.8 to 18; 19 ships no UMD build

dir=assets/graphiql
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null)
for package in "graphiql-$GRAPHIQL" "react-$REACT" "react-dom-$REACT"; do
    mkdir -p "$tmp/$package"
    tar xzf "$tmp/$package.tgz" -C "$tmp/$package"
done

cp "$tmp/graphiql-$GRAPHIQL/package/graphiql.min.js" "$dir/graphiql-$GRAPHIQL.min.js"
cp "$tmp/graphiql-$GRAPHIQL/package/graphiql.min.css" "$dir/graphiql-$GRAPHIQL.min.css"
cp "$tmp/graphiql-$GRAPHIQL/package/LICENSE" "$dir/LICENSE.graphiql"
cp "$tmp/react-$REACT/package/umd/react.production.min.js" "$dir/react-$REACT.production.min.js"
cp "$tmp/react-$REACT/package/LICENSE" "$dir/LICENSE.react"
cp "$tmp/react-dom-$REACT/package/umd/react-dom.production.min.js" "$dir/react-dom-$REACT.production.min.js"
cp "$tmp/react-dom-$REACT/package/LICENSE" "$dir/LICENSE.react-dom"

cd "$dir"
if [[ "${1:-}" == "--write" ]]; then
    sha256sum "graphiql-$GRAPHIQL.min.js" "graphiql-$GRAPHIQL.min.css" \
        "react-$REACT.production.min.js" "react-dom-$REACT.production.min.js" \
        LICENSE.graphiql LICENSE.react LICENSE.react-dom >SHA256SUMS
    echo "SHA256SUMS rewritten; review the diff"
else
    sha256sum --check --strict SHA256SUMS
fi
