#!/usr/bin/env bash
# Unpacks libasio-dev from another Debian suite into DIR, leaving the system's apt setup alone (a private
# sources list, index and cache; only Debian's archive is reached). Prints the include directory to pass
# as -Dcpp_args=-isystem<dir>. CI uses it to build and test cogrid against a newer Asio than bookworm's
# 1.22 (the asio wrap in subprojects/ is 1.38.2).
# Usage: bash scripts/fetch-asio.sh SUITE DIR     e.g. bash scripts/fetch-asio.sh trixie build-asio-pkg
set -euo pipefail
suite=${1:?usage: fetch-asio.sh SUITE DIR}
dir=${2:?usage: fetch-asio.sh SUITE DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dir"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$work/sources.list"
opts=(-qq -o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
  -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update
(cd "$work" && apt-get "${opts[@]}" download libasio-dev)
dpkg-deb -x "$work"/libasio-dev_*.deb "$dir"
echo "fetch-asio: $suite's $(grep -m1 'define ASIO_VERSION ' "$dir/usr/include/asio/version.hpp" | sed 's|.*// ||') in $dir" >&2
cd "$dir/usr/include" && pwd
