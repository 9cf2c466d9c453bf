# scripts/setup's output: one line per step (ok, .., FAIL), coloured on a terminal only.
# Sourced by scripts/setup (and tests/unit/setup-root.test.ts). Reads QUIET (1: ok lines are not printed).
# colours on a terminal only: in a log file or CI capture (npm start > log) they were escape codes
TTY_1=0; TTY_2=0; [[ -t 1 && -z ${NO_COLOR:-} ]] && TTY_1=1; [[ -t 2 && -z ${NO_COLOR:-} ]] && TTY_2=1
color() { local tty="TTY_$1"; if [[ ${!tty} == 1 ]]; then printf '\033[%sm%s\033[0m' "$2" "$3"; else printf '%s' "$3"; fi; }
ok()   { [[ ${QUIET:-0} == 1 ]] || printf '  %s   %s\n' "$(color 1 32 ok)" "$*"; }
step() { printf '  %s   %s\n' "$(color 1 33 ..)" "$*"; }
fail() { printf '  %s %s\n' "$(color 2 31 FAIL)" "$1" >&2; shift; for l in "$@"; do printf '       %s\n' "$l" >&2; done; exit 1; }
