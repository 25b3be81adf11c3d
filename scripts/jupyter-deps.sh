#!/usr/bin/env bash
# Installs Debian's Jupyter (server, classic notebook, client, nbclient, nbconvert,
# ipykernel, jupyter_kernel_test), JupyterHub 3.0 and chromium, which the kernel tests drive.
# Exits at once when all of them are installed already. The hub's proxy is the npm package
# configurable-http-proxy (a devDependency, in node_modules/.bin), not Debian's.
#
# Usage: scripts/jupyter-deps.sh
#
# Needs Debian 12 (bookworm) and root (or sudo). Jupyter is then used through
# /usr/bin/python3: the python3 first on PATH may be another interpreter without
# these modules.
set -euo pipefail

PACKAGES=(
  jupyter-server jupyter-notebook jupyter-client jupyter-nbconvert jupyter-nbformat
  python3-jupyter-kernel-test python3-nbclient python3-ipykernel
  jupyterhub
  chromium
)
MODULES=jupyter_client,jupyter_kernel_test,nbclient,nbconvert,ipykernel,jupyterhub

case "${1:-}" in
  '') ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "jupyter-deps: unknown argument: $1" >&2; exit 2 ;;
esac

say() { echo "jupyter-deps: $*"; }
die() { echo "jupyter-deps: error: $*" >&2; exit 1; }
START=$SECONDS

missing() {
  local p
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || echo "$p"
  done
}

check_python() {
  /usr/bin/python3 -c "import ${MODULES}" 2>&1 && command -v /usr/bin/jupyter >/dev/null
}

command -v dpkg-query >/dev/null && command -v apt-get >/dev/null \
  || die "dpkg-query and apt-get are required (Debian 12 / bookworm)"

need=$(missing)
if [ -z "$need" ]; then
  check_python >/dev/null || die "all packages are installed but /usr/bin/python3 cannot import ${MODULES//,/, } (broken install?)"
  say "up to date: ${PACKAGES[*]}"
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: install as root: apt-get install ${need//$'\n'/ }"
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

say "missing: ${need//$'\n'/ }"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
say "apt-get update"
"${SUDO[@]}" apt-get update -q >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
say "apt-get install --no-install-recommends ${PACKAGES[*]}"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$log" 2>&1 \
  || { tail -40 "$log" >&2; die "apt-get install failed"; }
grep -E '^(Need to get|After this operation|[0-9]+ upgraded)' "$log" | sed 's/^/jupyter-deps:   /' || true
[ -z "$(missing)" ] || die "still missing after apt-get install: $(missing | tr '\n' ' ')"
out=$(check_python) || die "/usr/bin/python3 cannot import ${MODULES//,/, }: $out"
say "done in $((SECONDS - START))s: $(/usr/bin/python3 -c 'import jupyter_client, jupyter_kernel_test as t, nbclient, nbconvert, jupyterhub; print(f"jupyter_client {jupyter_client.__version__}, jupyter_kernel_test {t.__version__}, nbclient {nbclient.__version__}, nbconvert {nbconvert.__version__}, jupyterhub {jupyterhub.__version__}")')"
