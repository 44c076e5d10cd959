# Shared by the demo scripts (sourced, not run): step headings with the time
# each step took, and a private docker-registry on 127.0.0.1 (registry.sh).

now() { date +%s%N; }
ms() { echo $(( ($(now) - $1) / 1000000 )); }
DEMO_T0=$(now)
STEP_T=
step() {
  if [ -n "$STEP_T" ]; then printf '\033[2m   (step: %s ms)\033[0m\n' "$(ms "$STEP_T")"; fi
  STEP_T=$(now)
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

# free_port and start_registry (a private docker-registry on 127.0.0.1).
# shellcheck source=scripts/registry.sh
. "$(dirname "${BASH_SOURCE[0]}")/registry.sh"
