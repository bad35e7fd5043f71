#!/usr/bin/env bash
# Consumption checks: (1) a separate Meson project gets cogrid through a wrap pointing at this checkout;
# (2) an installed cogrid is used through its pkg-config file; (3) a CMake project finds the installed
# cogrid with find_package and links cogrid::cogrid, and a missing dependency fails find_package with its
# name. Prints one line per check:
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
# The wrap consumer builds beside the installed ones (two cores: one compile each); its verdict is
# printed at the end.
(
  if (cd "$work/consumer/wrap" && meson setup build >"$work/wrap.log" 2>&1 && ninja -C build -j1 >>"$work/wrap.log" 2>&1 &&
      ./build/app >>"$work/wrap.log" 2>&1 && grep -q "Dependency cogrid found: YES" "$work/wrap.log"); then
    echo "consumer wrap: PASS" >"$work/wrap.verdict"
  else
    { echo "consumer wrap: FAIL"; tail -30 "$work/wrap.log"; } >"$work/wrap.verdict"
  fi
) &
wrap_job=$!

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

  # (3) CMake: the package installed beside the pkg-config file, found from the install prefix.
  cm="$work/cmake"
  if [ -f "$(find "$dest" -name cogridConfig.cmake | head -1)" ] &&
     cmake -S "$root/tests/consumer/cmake" -B "$cm" -DCMAKE_PREFIX_PATH="$dest$prefix" -DCMAKE_CXX_COMPILER="${CXX:-c++}" \
       -DCMAKE_CXX_FLAGS="-Wall -Wextra -Wpedantic -Werror" >"$work/cmake.log" 2>&1 &&
     cmake --build "$cm" -j1 >>"$work/cmake.log" 2>&1 && "$cm/app" >>"$work/cmake.log" 2>&1 &&
     ! ldd "$cm/app" | grep -q "libssl.so.3\|libcrypto.so.3"; then
    echo "consumer cmake: PASS"
  else
    echo "consumer cmake: FAIL"; tail -30 "$work/cmake.log"; status=1
  fi
  if cmake -S "$root/tests/consumer/cmake" -B "$cm-missing" -DCMAKE_PREFIX_PATH="$dest$prefix" \
       -DCOGRID_BORINGSSL_LIBRARY_DIR=/nonexistent >"$work/cmake-missing.log" 2>&1; then
    echo "consumer cmake, missing dependency: FAIL (configured)"; status=1
  elif grep -q "needs what was not found: BoringSSL" "$work/cmake-missing.log" && grep -q "android-libboringssl-dev" "$work/cmake-missing.log"; then
    echo "consumer cmake, missing dependency: PASS"
  else
    echo "consumer cmake, missing dependency: FAIL"; tail -20 "$work/cmake-missing.log"; status=1
  fi
else
  echo "consumer pkg-config: FAIL (meson install)"; tail -30 "$work/install.log"; status=1
fi
wait "$wrap_job"
cat "$work/wrap.verdict" 2>/dev/null || echo "consumer wrap: FAIL (no verdict)"
grep -q "consumer wrap: PASS" "$work/wrap.verdict" 2>/dev/null || status=1
exit $status
