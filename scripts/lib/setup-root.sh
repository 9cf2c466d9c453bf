# scripts/setup's installs, which need root: run as root, through `sudo -n`, or, with neither,
# fail printing the exact command(s) to run (quoted so that pasting them runs what setup would
# have), then "run scripts/setup again". Sourced after scripts/lib/setup-output.sh (fail, step).
if [[ $(id -u) == 0 ]]; then SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo)
else SUDO=none; fi

# a command line as a shell reads it back: every argument quoted where it needs to be
shell_words() { local out='' a; for a in "$@"; do out+="${out:+ }$(printf '%q' "$a")"; done; printf '%s' "$out"; }

# fail: this step needs root; the lines to run are given as whole command lines
need_root() { local what=$1; shift; fail "this step needs root: $what" "run it yourself, then run scripts/setup again:" "$@"; }

# run a command as root
as_root() {
  [[ "${SUDO[*]}" == none ]] && need_root "$(shell_words "$@")" "  sudo $(shell_words "$@")"
  "${SUDO[@]}" "$@"
}

# write CONTENT to FILE as root (a sources list): `sudo tee FILE` alone would wait for its input
as_root_write() {
  local file=$1 content=$2
  [[ "${SUDO[*]}" == none ]] && need_root "writing $file" "  printf '%s' $(printf '%q' "$content") | sudo tee $(printf '%q' "$file") >/dev/null"
  printf '%s' "$content" | "${SUDO[@]}" tee "$file" >/dev/null
}

# install Debian packages (apt-get update once per run first)
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || fail "apt-get not found: install these packages with your system's package manager: $*"
  # both commands at once: told only the update, a user without root ran it and was told it again
  [[ "${SUDO[*]}" == none ]] && need_root "apt-get install $*" \
    "  sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(shell_words "$@")"
  if [[ $APT_UPDATED == 0 ]]; then as_root apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  step "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
