#!/usr/bin/env bash
# Installs the Debian bookworm packages cogrid builds with, if any is missing. Sourced by scripts/demo and
# scripts/test; needs root (or sudo) only when something must be installed.
# Usage: source scripts/deps.sh   (COGRID_EXTRA_PACKAGES="a b" adds packages)
cogrid_packages=(meson ninja-build g++ pkg-config python3 libasio-dev libwslay-dev libmsgpack-cxx-dev
  libxxhash-dev doctest-dev android-libboringssl-dev iproute2 openssl ${COGRID_EXTRA_PACKAGES:-})

cogrid_missing=()
for p in "${cogrid_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || cogrid_missing+=("$p")
done
if [ ${#cogrid_missing[@]} -gt 0 ]; then
  echo "cogrid: installing ${cogrid_missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${cogrid_missing[@]}" >/dev/null
fi
unset cogrid_missing cogrid_packages
