#!/usr/bin/env bash
# Consumption checks: (1) a separate Meson project gets cogrid through a wrap pointing at this checkout;
# (2) an installed cogrid is used through its pkg-config file. Prints one line per check:
# "consumer <name>: PASS|FAIL". Usage: tests/consumer/run.sh BUILD_DIR (a configured cogrid build)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

# (1) wrap: a git checkout of the tree as it is now (committed or not) so wrap-git can clone it.
cp -r "$root/tests/consumer" "$work/consumer"
mkdir -p "$work/consumer/wrap/subprojects"
src="$work/cogrid-src"
mkdir -p "$src" && (cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src")
git -C "$src" init -q && git -C "$src" add -A && git -C "$src" -c user.name=ci -c user.email=ci@localhost commit -qm snapshot
cat > "$work/consumer/wrap/subprojects/cogrid.wrap" <<WRAP
[wrap-git]
url = file://$src
revision = HEAD
depth = 1

[provide]
dependency_names = cogrid
WRAP
if (cd "$work/consumer/wrap" && meson setup build >"$work/wrap.log" 2>&1 && ninja -C build >>"$work/wrap.log" 2>&1 &&
    ./build/app >>"$work/wrap.log" 2>&1 && grep -q "Dependency cogrid found: YES" "$work/wrap.log"); then
  echo "consumer wrap: PASS"
else
  echo "consumer wrap: FAIL"; tail -30 "$work/wrap.log"; status=1
fi

# (2) install + pkg-config
dest="$work/install"
if meson install -C "$build" --destdir "$dest" >"$work/install.log" 2>&1; then
  pc=$(find "$dest" -name cogrid.pc | head -1)
  prefix=$(sed -n 's/^prefix=//p' "$pc")
  flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --define-variable=prefix="$dest$prefix" --cflags --libs cogrid)
  if [ -n "$pc" ] && [ -f "$dest$prefix/include/cogrid/cogrid.hpp" ] &&
     ${CXX:-c++} -std=c++20 -Wall -Wextra -Wpedantic -Werror "$root/tests/consumer/app.cpp" $flags -o "$work/app-pc" >>"$work/install.log" 2>&1 &&
     "$work/app-pc" >>"$work/install.log" 2>&1 && ! ldd "$work/app-pc" | grep -q "libssl.so.3\|libcrypto.so.3"; then
    echo "consumer pkg-config: PASS"
  else
    echo "consumer pkg-config: FAIL"; echo "flags: $flags"; tail -30 "$work/install.log"; status=1
  fi
else
  echo "consumer pkg-config: FAIL (meson install)"; tail -30 "$work/install.log"; status=1
fi
exit $status
