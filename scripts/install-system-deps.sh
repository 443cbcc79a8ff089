#!/usr/bin/env bash
# Debian packages the local stack needs: Slurm with slurmrestd and JWT, munge, etcd, sshd, what
# building kube-apiserver from Debian's source package takes, Chromium for the web console's tests, and
# debootstrap (Slurm 24.11 and 26.05 run from Debian chroots it makes). Installs only what is missing.
set -euo pipefail

packages=(
  slurmctld slurmd slurmrestd slurm-client munge slurm-wlm-jwt-plugin
  etcd-server openssh-server openssh-client
  golang-go golang-github-modern-go-reflect2-dev rsync jq dpkg-dev openssl
  lua5.4 wrk
  chromium  # the browser tests' headless Chromium (driven by Playwright, nothing downloaded)
  debootstrap
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v kubectl >/dev/null || missing+=(kubernetes-client)

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system packages missing: ${missing[*]}" >&2
  echo "installing them needs root: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts some daemons on install; the local stack runs its own, so stop the packaged services.
for svc in slurmctld slurmd slurmrestd munge ssh etcd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
